//! Run accounting off the batch path, as an outbox: settling a batch only records which runs
//! its jobs belong to; one task per process then checks whether those runs ended (recording
//! each end once) and delivers the ends' reports. A clean stop waits, bounded, for what is
//! pending ([`Runs::close`]) instead of dropping it.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{RunRecord, Runs};

pub(super) enum Message {
    /// Whether these runs have ended.
    Check(Vec<String>),
    /// A run this process ended, whose report is owed.
    Report(Box<RunRecord>),
    /// All sent before this is done: say so, and stop.
    Close(oneshot::Sender<()>),
}

/// The sending end, shared by every clone of a [`Runs`]; its task starts with the first
/// message, so that a `Runs` built and configured (`with_notifier`) first is the one it has.
#[derive(Clone, Default)]
pub(super) struct Outbox(Arc<OnceLock<mpsc::UnboundedSender<Message>>>);

impl Runs {
    /// Hands `message` to this process's task; gives it back when the task has stopped.
    pub(super) fn post(&self, message: Message) -> Result<(), Message> {
        let sender = self.outbox.0.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(deliver(self.clone(), receiver));
            sender
        });
        sender.send(message).map_err(|e| e.0)
    }

    /// Waits, at most `limit`, until the run checks and reports posted so far are done: a
    /// clean stop's last step, so that the report of a run this process ended is sent.
    pub async fn close(&self, limit: Duration) {
        let Some(sender) = self.outbox.0.get() else {
            return;
        };
        let (ack, done) = oneshot::channel();
        if sender.send(Message::Close(ack)).is_err() {
            return;
        }
        if tokio::time::timeout(limit, done).await.is_err() {
            tracing::warn!(
                limit = %humantime::format_duration(limit),
                "run checks or reports still pending at the stop are dropped (the stall check ends such runs later; their reports are lost)"
            );
        }
    }
}

/// The task: checks runs (many batches name the same run: what is queued is taken at once and
/// each run checked once) and sends reports, each on a task of its own so that a slow webhook
/// (up to four tries of 10 s) never delays the next run's end.
async fn deliver(runs: Runs, mut receiver: mpsc::UnboundedReceiver<Message>) {
    let mut reports = JoinSet::new();
    let report = |run: RunRecord, reports: &mut JoinSet<()>| {
        if runs.notifier.is_some() {
            let runs = runs.clone();
            reports.spawn(async move { runs.send_report(run).await });
        }
    };
    while let Some(first) = receiver.recv().await {
        let (mut checks, mut closes) = (BTreeSet::new(), Vec::new());
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Check(ids) => checks.extend(ids),
                Message::Report(run) => report(*run, &mut reports),
                // What is queued behind the close is still done here; a post from now on is
                // refused, so its caller does it itself.
                Message::Close(ack) => {
                    receiver.close();
                    closes.push(ack);
                }
            }
            next = receiver.try_recv().ok();
        }
        for id in checks {
            match runs.check_end(&id).await {
                Ok(Some(run)) => report(run, &mut reports),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(run = %id, error = %e, "cannot check whether a run ended; the stall check looks again")
                }
            }
        }
        while reports.try_join_next().is_some() {}
        if !closes.is_empty() {
            while reports.join_next().await.is_some() {}
            for ack in closes {
                let _ = ack.send(());
            }
            return;
        }
    }
}
