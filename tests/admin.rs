//! The back-office API on the real services: every route refuses a missing or wrong token
//! (401), bad inputs get a 4xx with a message, and the good ones act on Redis and MongoDB.

mod common;

use chrono::NaiveDate;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use fantoccini::Locator;
use hyper_util::client::legacy::connect::HttpConnector;
use tidegate::control::pacer::{ControlOptions, Pacer};
use tidegate::http::admin::router;
use tidegate_score as score;
use tokio_util::sync::CancellationToken;

use tidegate::queue::{Job, JobOptions, JobState, NewJob, Queue, Retention, Settlement};
use tidegate::runs::{RunRecord, Runs};
use tidegate::schedule::Planner;
use tidegate::store::Store;

const TOKEN: &str = "0123456789abcdef-test-token";
const TZ: chrono_tz::Tz = chrono_tz::Asia::Seoul;

struct Admin {
    base: String,
    /// The test's own write budget (every test isolates its own).
    budget: String,
    queue: Queue,
    runs: Runs,
    planner: Planner,
    store: Store,
    http: reqwest::Client,
}

impl Admin {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, body, Some(TOKEN)).await
    }
}

async fn start() -> Admin {
    let budget = common::unique("admin_budget");
    let app = common::app(
        "admin",
        &[
            ("TIDEGATE_ATTEMPTS", "1"),
            ("TIDEGATE_BACKOFF", "fixed:10ms"),
            ("TIDEGATE_TIMEZONE", "Asia/Seoul"),
            ("TIDEGATE_PLAN_LEASE", "10m"),
            ("TIDEGATE_BUDGET", &budget),
            ("TIDEGATE_APPS", "upsert,score"),
        ],
    )
    .await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
    score::sample_day(&app.store, day, TZ, 10, 3, |_| {})
        .await
        .expect("sample day");
    let state = app.admin_state(TOKEN.into());
    let (queue, runs, store) = (app.queue, app.runs, app.store);
    let planner = app.planner.expect("score plans days");
    let app = router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Admin {
        base,
        budget,
        queue,
        runs,
        planner,
        store,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    let routes = [
        ("GET", "/api/queues".to_owned()),
        ("POST", format!("/api/queues/{q}/pause")),
        ("POST", format!("/api/queues/{q}/resume")),
        ("GET", "/api/runs?date=2026-11-24".to_owned()),
        ("POST", "/api/runs".to_owned()),
        ("GET", "/api/runs/2026-11-24-r1".to_owned()),
        ("GET", format!("/api/queues/{q}/jobs?state=waiting")),
        ("GET", format!("/api/queues/{q}/jobs/1")),
        ("DELETE", format!("/api/queues/{q}/jobs/1")),
        ("POST", format!("/api/queues/{q}/jobs/1/retry")),
        ("POST", format!("/api/queues/{q}/jobs/1/promote")),
        ("POST", format!("/api/queues/{q}/retry-failed")),
        ("GET", format!("/api/queues/{q}/control")),
        ("GET", "/api/runs".to_owned()),
        ("GET", "/api/schedule".to_owned()),
    ];
    // Every route of the document is in the list above.
    let doc = tidegate::http::admin::openapi();
    let listed: usize = doc
        .paths
        .paths
        .values()
        .map(|item| {
            [&item.get, &item.post, &item.delete, &item.put, &item.patch]
                .iter()
                .filter(|op| op.is_some())
                .count()
        })
        .sum();
    assert_eq!(listed, routes.len() - 1, "one route is listed twice");
    for (method, path) in &routes {
        for token in [None, Some("wrong"), Some("0123456789abcdef-test-tokeN")] {
            let (status, body) = admin
                .call(method, path, Some(json!({"date": "2026-11-24"})), token)
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert!(body["error"].is_string());
        }
    }
    assert!(
        !admin.queue.is_paused().await.expect("paused?"),
        "nothing acted"
    );
}

#[tokio::test]
async fn the_queue_is_listed_paused_and_resumed() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    let (status, body) = admin.ok("GET", "/api/queues", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], q.as_str());
    assert_eq!(body[0]["paused"], false);
    assert_eq!(body[0]["counts"]["waiting"], 0);

    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(admin.queue.is_paused().await.expect("paused?"));
    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/resume"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!admin.queue.is_paused().await.expect("paused?"));

    let (status, body) = admin.ok("POST", "/api/queues/nosuch/pause", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("nosuch")));
}

#[tokio::test]
async fn runs_are_started_listed_and_shown_and_bad_inputs_are_refused() {
    let admin = start().await;
    for (method, path, body) in [
        ("GET", "/api/runs?limit=0", None),
        ("GET", "/api/runs?limit=201", None),
        ("GET", "/api/runs?date=24-11-2026", None),
        ("GET", "/api/runs/not-a-run", None),
        ("GET", "/api/runs/2026-11-24-rX", None),
        ("POST", "/api/runs", Some(json!({"date": "2026-02-30"}))),
        ("POST", "/api/runs", Some(json!({"day": "2026-11-24"}))),
        (
            "POST",
            "/api/runs",
            Some(json!({"date": "2026-11-24", "purge": "yes"})),
        ),
        ("POST", "/api/runs", Some(json!([1, 2]))),
    ] {
        let (status, reply) = admin.ok(method, path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body:?}: {reply}"
        );
        assert!(reply["error"].is_string(), "{reply}");
    }

    let (status, run) = admin
        .ok(
            "POST",
            "/api/runs",
            Some(json!({"date": "2026-11-24", "purge": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["planned"], 10);
    assert_eq!(run["trigger"], "admin");
    let id = run["id"].as_str().expect("run id").to_owned();
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!(counts.waiting, 10, "the run's jobs wait in the queue");

    let (status, listed) = admin.ok("GET", "/api/runs?date=2026-11-24", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["id"] == id.as_str())),
        "{listed}"
    );
    let (status, latest) = admin.ok("GET", "/api/runs?limit=200", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        latest
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["id"] == id.as_str())),
        "the latest runs include the one just started"
    );
    let (status, shown) = admin.ok("GET", &format!("/api/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["id"], id.as_str());
    for missing in ["/api/runs/2026-11-24-r999999", "/api/runs/2026-13-45-r1"] {
        let (status, _) = admin.ok("GET", missing, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
    let (status, of_day) = admin
        .ok("GET", "/api/runs?date=2026-11-24&limit=1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(of_day[0]["id"], id.as_str(), "newest first");

    // The run's jobs, paged, and one in full.
    let q = admin.queue.name().to_owned();
    let (status, page) = admin
        .ok(
            "GET",
            &format!("/api/queues/{q}/jobs?state=waiting&page=1&size=3"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 10);
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(3));
    let (_, last) = admin
        .ok(
            "GET",
            &format!("/api/queues/{q}/jobs?state=waiting&page=4&size=3"),
            None,
        )
        .await;
    assert_eq!(last["jobs"].as_array().map(Vec::len), Some(1));
    let first = page["jobs"][0]["id"].as_str().expect("job id").to_owned();
    let (status, job) = admin
        .ok("GET", &format!("/api/queues/{q}/jobs/{first}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["data"]["runId"], id.as_str());
    assert!(job["data"]["userId"].is_string());
    assert_eq!(job["attemptsMade"], 0);
    let (status, _) = admin
        .ok("GET", &format!("/api/queues/{q}/jobs/no-such-job"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        format!("/api/queues/{q}/jobs"),
        format!("/api/queues/{q}/jobs?state=done"),
        format!("/api/queues/{q}/jobs?state=failed&size=0"),
        format!("/api/queues/{q}/jobs?state=failed&size=501"),
        format!("/api/queues/{q}/jobs?state=failed&page=x"),
        format!("/api/queues/{q}/jobs/a:b"),
    ] {
        let (status, reply) = admin.ok("GET", &bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {reply}");
        assert!(reply["error"].is_string());
    }
}

fn fail(id: &str) -> Settlement {
    Settlement::Failed {
        id: id.to_owned(),
        reason: "user has no events".into(),
        stacktrace: vec![],
        keep: Retention::KEEP_ALL,
        exhausted: true,
        count: None,
    }
}

fn complete(id: &str) -> Settlement {
    Settlement::Completed {
        id: id.to_owned(),
        returnvalue: "null".into(),
        keep: Retention::KEEP_ALL,
        count: None,
    }
}

/// Takes every waiting job and settles each as `settle` says, counting them in their runs as
/// the worker does.
async fn work(admin: &Admin, settle: impl Fn(&Job) -> Settlement) {
    let taken = admin
        .queue
        .take(1000, "admin-test", Duration::from_secs(30))
        .await
        .expect("take");
    let settlements: Vec<Settlement> = taken
        .jobs
        .iter()
        .map(|job| settle(job).counted_in(admin.runs.count_for(job)))
        .collect();
    admin
        .queue
        .settle("admin-test", &settlements)
        .await
        .expect("settle");
    let jobs: Vec<&Job> = taken.jobs.iter().collect();
    admin.runs.check_ends(&jobs).await;
}

/// Plans the sample day as a run and works it; one job of the ten fails for good, so the run
/// ends failed. Returns the run and the failed job's id.
async fn run_with_one_failure(admin: &Admin) -> (RunRecord, String) {
    let day = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
    let run = admin
        .planner
        .plan(day, "schedule", false)
        .await
        .expect("plan");
    let unlucky = std::sync::Mutex::new(None);
    work(admin, |job| {
        let mut unlucky = unlucky.lock().expect("lock");
        if unlucky.is_none() {
            *unlucky = Some(job.id.clone());
            fail(&job.id)
        } else {
            complete(&job.id)
        }
    })
    .await;
    let failed_id = unlucky.into_inner().expect("lock").expect("one job failed");
    // The outbox ends it, off the batch's path.
    admin
        .runs
        .wait_for_end(&run.id, Duration::from_secs(10))
        .await
        .expect("the run ends");
    (run, failed_id)
}

#[tokio::test]
async fn a_failed_job_is_retried_and_its_run_reopens_and_ends_again() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    let (run, failed_id) = run_with_one_failure(&admin).await;
    let ended = admin.runs.get(&run.id).await.expect("run").expect("exists");
    assert_eq!(
        (ended.outcome.as_deref(), ended.failed),
        (Some("failed"), 1)
    );

    let (status, page) = admin
        .ok("GET", &format!("/api/queues/{q}/jobs?state=failed"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"][0]["id"], failed_id.as_str());
    assert_eq!(page["jobs"][0]["failedReason"], "user has no events");

    // Not failed: 409; no such job: 404; the failed one: back in wait, run open again.
    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/jobs/no-such/retry"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, reply) = admin
        .ok(
            "POST",
            &format!("/api/queues/{q}/jobs/{failed_id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["from"], "failed");
    let (status, _) = admin
        .ok(
            "POST",
            &format!("/api/queues/{q}/jobs/{failed_id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "no longer failed");
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.failed), (1, 0));
    let job = admin
        .queue
        .job(&failed_id)
        .await
        .expect("job")
        .expect("kept");
    assert_eq!(job.failed_reason, None);
    assert_eq!(job.attempts_made, 1, "attempts are kept, as in BullMQ");
    let reopened = admin.runs.get(&run.id).await.expect("run").expect("exists");
    assert_eq!((reopened.ended_at, reopened.outcome), (None, None));
    let (_, shown) = admin
        .ok("GET", &format!("/api/runs/{}", run.id), None)
        .await;
    assert_eq!(
        (&shown["completed"], &shown["failed"], &shown["outcome"]),
        (&json!(9), &json!(0), &Value::Null),
        "an open run shows its live counts"
    );

    // The retry succeeds: the run ends again, succeeded.
    work(&admin, |job| complete(&job.id)).await;
    let again = admin
        .runs
        .wait_for_end(&run.id, Duration::from_secs(10))
        .await
        .expect("the run ends again");
    assert_eq!(
        (again.outcome.as_deref(), again.completed, again.failed),
        (Some("succeeded"), 10, 0)
    );
    let report = admin.runs.report(again).await.expect("report");
    assert!(
        report.reasons.is_empty(),
        "the retried failure is no longer a reason: {:?}",
        report.reasons
    );
}

#[tokio::test]
async fn all_failed_jobs_are_retried_delayed_ones_promoted_and_jobs_removed() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| NewJob::new("n", json!({ "i": i })))
        .collect();
    admin.queue.add_bulk(&jobs).await.expect("add");
    work(&admin, |job| fail(&job.id)).await;
    let (status, reply) = admin
        .ok("POST", &format!("/api/queues/{q}/retry-failed"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["retried"], 5);
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.failed), (5, 0));

    // A delayed job runs now when promoted; a waiting one cannot be.
    let later = NewJob::new("n", json!({})).with_opts(JobOptions {
        delay: 3_600_000,
        ..JobOptions::default()
    });
    let id = admin.queue.add(later).await.expect("add").id;
    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/jobs/{id}/promote"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.delayed), (6, 0));
    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/jobs/{id}/promote"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "no longer delayed");

    // Removing: a held job is refused, a waiting one goes with its data.
    let taken = admin
        .queue
        .take(1, "holder", Duration::from_secs(30))
        .await
        .expect("take");
    let held = taken.jobs[0].id.clone();
    let (status, _) = admin
        .ok("DELETE", &format!("/api/queues/{q}/jobs/{held}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, reply) = admin
        .ok("DELETE", &format!("/api/queues/{q}/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["from"], "waiting");
    assert_eq!(admin.queue.job(&id).await.expect("read"), None);
    let (status, _) = admin
        .ok("DELETE", &format!("/api/queues/{q}/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.active), (4, 1));
}

#[tokio::test]
async fn the_page_and_the_document_are_served_without_the_token() {
    let admin = start().await;
    let page = admin
        .http
        .get(format!("{}/", admin.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("tidegate back-office")
    );

    let (status, doc) = admin.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let retry = &doc["paths"]["/api/queues/{name}/jobs/{id}/retry"]["post"];
    assert!(retry["responses"]["401"].is_object(), "{retry}");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let q = admin.queue.name().to_owned();
    let (status, control) = admin
        .ok("GET", &format!("/api/queues/{q}/control"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(control["rate"], Value::Null, "no pacer publishes here");
    assert_eq!(control["members"], 0);
}

/// chromedriver on a port of its own, stopped when dropped. Chromium's scratch files go to a
/// directory of its own under cargo's target, removed on drop, not to /tmp.
struct Chromedriver {
    url: String,
    process: tokio::process::Child,
    scratch: std::path::PathBuf,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

impl Chromedriver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let scratch =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(common::unique("chromium"));
        std::fs::create_dir_all(&scratch).expect("a scratch directory");
        let process = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", &scratch)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (Debian: apt-get install chromium chromium-driver; scripts/test installs them)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        common::eventually("chromedriver to listen", Duration::from_secs(20), || {
            let status = status.clone();
            async move {
                reqwest::get(status)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
        Self {
            url,
            process,
            scratch,
        }
    }

    async fn headless_chromium(&self) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,960"] }),
        );
        fantoccini::ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a headless Chromium session")
    }
}

/// The page in headless Chromium, as an operator uses it: a run ended with a failed job; the
/// page shows the job and its reason, the run and the live load control; Retry puts the job
/// back in wait, as Redis confirms. The screenshot it takes is the README's
/// (`TIDEGATE_SCREENSHOT=docs/back-office.png` writes it there).
#[tokio::test]
async fn the_page_shows_a_failed_job_and_chromium_retries_it() {
    let admin = start().await;
    // The queue's load control runs as in `tidegate run`, so the page shows real numbers. On
    // FerretDB the database CPU comes from Prometheus, as in the demo.
    let mut options = ControlOptions {
        interval: Duration::from_secs(1),
        budget: admin.budget.clone(),
        ..ControlOptions::default()
    };
    if let Some(cpu) = common::database_cpu_query() {
        options.prometheus_url = Some(common::env("PROMETHEUS_URL"));
        options.prometheus_cpu = Some(cpu);
    }
    let redis = admin.queue.connection();
    let (pacer, _throttle) =
        Pacer::build(options, redis, admin.queue.name(), admin.store.clone(), 500).expect("pacer");
    let stop = CancellationToken::new();
    let pacing = tokio::spawn(pacer.run(stop.clone()));

    let (run, failed_id) = run_with_one_failure(&admin).await;

    let driver = Chromedriver::start().await;
    let browser = driver.headless_chromium().await;
    browser
        .goto(&format!("{}/", admin.base))
        .await
        .expect("open the page");
    browser
        .find(Locator::Id("token"))
        .await
        .expect("the token field")
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    browser
        .find(Locator::Css("form.login button"))
        .await
        .expect("connect button")
        .click()
        .await
        .expect("connect");

    let row = format!("#failed tr[data-job-id=\"{failed_id}\"]");
    let found = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&row))
        .await;
    let Ok(failed_row) = found else {
        // What the page said (its status line shows API errors) makes the failure readable.
        let status = browser.find(Locator::Id("status")).await.expect("status");
        panic!(
            "the failed job is not listed; the page says {:?}",
            status.text().await
        );
    };
    let text = failed_row.text().await.expect("row text");
    assert!(text.contains("user has no events"), "{text}");
    let run_row = format!("#runs tr[data-run-id=\"{}\"]", run.id);
    let run_text = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&run_row))
        .await
        .expect("the run is listed")
        .text()
        .await
        .expect("run text");
    assert!(run_text.contains("failed"), "{run_text}");
    // The leader has stepped the controller once the limiting signal is past `resuming`.
    common::eventually(
        "the load control on the page",
        Duration::from_secs(20),
        || async {
            let limiter = browser.find(Locator::Id("limiter")).await.ok()?;
            let text = limiter.text().await.ok()?;
            (text != "n/a" && text != "resuming").then_some(())
        },
    )
    .await;
    // The job's id opens its details: data (with its run), options, stack trace.
    browser
        .find(Locator::Css(&format!("{row} button.link")))
        .await
        .expect("the job's id")
        .click()
        .await
        .expect("open the details");
    let details = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#failed tr.details pre"))
        .await
        .expect("the job's details")
        .text()
        .await
        .expect("details text");
    assert!(details.contains(&run.id), "{details}");

    let png = browser.screenshot().await.expect("screenshot");
    let path = std::env::var("TIDEGATE_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/back-office.png", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, png).expect("write the screenshot");

    let retry = format!("{row} button.retry");
    browser
        .find(Locator::Css(&retry))
        .await
        .expect("retry button")
        .click()
        .await
        .expect("click retry");
    let queue = admin.queue.clone();
    common::eventually(
        "the job back in wait, in Redis",
        Duration::from_secs(20),
        || {
            let (queue, id) = (queue.clone(), failed_id.clone());
            async move {
                let (_, waiting) = queue.jobs(JobState::Waiting, 0, 100).await.ok()?;
                waiting.iter().any(|j| j.id == id).then_some(())
            }
        },
    )
    .await;
    assert_eq!(admin.queue.counts().await.expect("counts").failed, 0);
    // And the page follows.
    common::eventually(
        "the page to list no failed job",
        Duration::from_secs(20),
        || async {
            browser
                .find(Locator::Css(&row))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    browser.close().await.expect("close the browser");
    stop.cancel();
    pacing.await.expect("pacer stops");
}

/// A retried job can finish before its run is reopened (the worker is fast, or the reopening
/// slow): the run must still end, once, with the right counts.
#[tokio::test]
async fn a_run_whose_retried_job_finished_before_it_was_reopened_still_ends() {
    let admin = start().await;
    let (run, failed_id) = run_with_one_failure(&admin).await;
    let retried = admin
        .queue
        .retry(&failed_id)
        .await
        .expect("retry")
        .expect("was failed");
    work(&admin, |job| complete(&job.id)).await;
    admin.runs.reopen(&[retried]).await.expect("reopen");
    let ended = admin.runs.get(&run.id).await.expect("run").expect("exists");
    assert_eq!(
        (ended.outcome.as_deref(), ended.completed, ended.failed),
        (Some("succeeded"), 10, 0)
    );
}

/// Every key under the queue's base, with its value (`DUMP`), to tell whether any was touched.
async fn queue_keys(queue: &Queue) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut conn = queue.connection();
    let pattern = format!("{}*", queue.keys().base());
    let mut cursor = 0u64;
    let mut found = std::collections::BTreeMap::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        for key in keys {
            let value: Option<Vec<u8>> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("DUMP");
            found.insert(key, value.unwrap_or_default());
        }
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// The names of the queue's own keys are never job ids: every route that takes a job id
/// answers 404 for them without touching the key (`DELETE …/jobs/meta` deleted the meta hash,
/// so a paused queue reported unpaused with its jobs stranded in `paused`; `GET …/jobs/meta`
/// showed a fake job; `…/jobs/id` and `…/jobs/wait` were 503, WRONGTYPE), and no job can be
/// added under one.
#[tokio::test]
async fn the_queues_own_key_names_are_never_job_ids() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    // Jobs in most states, so that most of the queue's keys exist: failed, delayed,
    // prioritized (with its counter), and waiting jobs moved to paused by a pause.
    let jobs: Vec<NewJob> = (0..3)
        .map(|i| NewJob::new("n", json!({ "i": i })))
        .collect();
    admin.queue.add_bulk(&jobs).await.expect("add");
    work(&admin, |job| fail(&job.id)).await;
    let later = JobOptions {
        delay: 3_600_000,
        ..JobOptions::default()
    };
    let urgent = JobOptions {
        priority: 1,
        ..JobOptions::default()
    };
    admin
        .queue
        .add_bulk(&[
            NewJob::new("n", json!({})).with_opts(later),
            NewJob::new("n", json!({})).with_opts(urgent),
            NewJob::new("n", json!({})),
            NewJob::new("n", json!({})),
        ])
        .await
        .expect("add");
    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = queue_keys(&admin.queue).await;
    for key in [
        "meta",
        "id",
        "failed",
        "delayed",
        "prioritized",
        "pc",
        "paused",
    ] {
        assert!(
            before.contains_key(&format!("{}{key}", admin.queue.keys().base())),
            "the test makes {key} exist: {:?}",
            before.keys()
        );
    }

    for name in tidegate::queue::keys::RESERVED {
        let job = format!("/api/queues/{q}/jobs/{name}");
        for (method, path) in [
            ("GET", job.clone()),
            ("DELETE", job.clone()),
            ("POST", format!("{job}/retry")),
            ("POST", format!("{job}/promote")),
        ] {
            let (status, reply) = admin.ok(method, &path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {reply}");
            assert!(
                reply["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("queue's own keys")),
                "{method} {path}: {reply}"
            );
        }
    }
    // Nor can a producer add a job under one of these names.
    for name in tidegate::queue::keys::RESERVED {
        let named = NewJob::new("n", json!({})).with_opts(JobOptions {
            job_id: Some((*name).to_owned()),
            ..JobOptions::default()
        });
        let refused = admin.queue.add(named).await;
        assert!(
            matches!(refused, Err(tidegate::queue::QueueError::InvalidJob { .. })),
            "{name}: {refused:?}"
        );
    }
    assert_eq!(
        queue_keys(&admin.queue).await,
        before,
        "no key of the queue was touched"
    );
    assert!(admin.queue.is_paused().await.expect("paused?"));
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!(
        (counts.paused, counts.failed, counts.delayed),
        (2, 3, 1),
        "{counts:?}"
    );

    // The document names them, so a client knows before it asks.
    let doc = serde_json::to_value(tidegate::http::admin::openapi()).expect("document");
    let params = &doc["paths"]["/api/queues/{name}/jobs/{id}"]["get"]["parameters"];
    let id = params
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "id"))
        .expect("the id parameter");
    let described = id["description"].as_str().unwrap_or("");
    for name in tidegate::queue::keys::RESERVED {
        assert!(described.contains(name), "{name} is not in {described:?}");
    }
}

/// An oversized body gets 413 with the API's JSON error over a real socket, declared or
/// chunked, and nothing runs: the server used to answer and close with the body unread, and
/// the client, still sending, got a connection reset instead of the answer.
#[tokio::test]
async fn an_oversized_body_is_answered_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let admin = start().await;
    let twenty_mb = {
        let mut body = br#"{"date": "2026-11-24", "pad": ""#.to_vec();
        body.resize(20 * 1024 * 1024, b'x');
        body.extend_from_slice(br#""}"#);
        body
    };
    // Declared: reqwest sends Content-Length and the whole body before reading the answer.
    let answer = admin
        .http
        .post(format!("{}/api/runs", admin.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(twenty_mb.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("the API answers instead of resetting: {e:?}"));
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let reply: Value = answer.json().await.expect("a JSON error");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("64 KiB")),
        "{reply}"
    );

    // Chunked: no length to refuse up front; the limit is found while reading.
    let addr = admin.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    for chunk in twenty_mb.chunks(64 * 1024) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        socket
            .write_all(&frame)
            .await
            .expect("the server reads the body instead of resetting");
    }
    socket.write_all(b"0\r\n\r\n").await.expect("end the body");
    let mut answer = Vec::new();
    socket
        .read_to_end(&mut answer)
        .await
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("application/json") && answer.contains("64 KiB"),
        "{answer}"
    );

    let runs = admin
        .runs
        .latest(Some("2026-11-24"), 10)
        .await
        .expect("runs");
    assert!(runs.is_empty(), "nothing was planned: {runs:?}");
    // A body the API takes still gets through the limit whole.
    let (status, run) = admin
        .ok("POST", "/api/runs", Some(json!({"date": "2026-11-24"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
}

/// Days that cannot be a run's are refused (400) with the accepted range: before 2000-01-01
/// (a run of 1900-01-01 was planned and "succeeded" empty), and from today on in the
/// planner's timezone, as a day still going has no complete data. Nothing is recorded.
#[tokio::test]
async fn runs_of_days_that_cannot_be_real_are_refused() {
    let admin = start().await;
    let today = chrono::Utc::now().with_timezone(&TZ).date_naive();
    let yesterday = today.pred_opt().expect("a day before");
    let tomorrow = today.succ_opt().expect("a day after");
    let accepted = format!("accepted from 2000-01-01 to {yesterday}");
    for date in [
        "1900-01-01".to_owned(),
        "1999-12-31".to_owned(),
        today.to_string(),
        tomorrow.to_string(),
        "9999-12-31".to_owned(),
    ] {
        let (status, reply) = admin
            .ok(
                "POST",
                "/api/runs",
                Some(json!({"date": date, "purge": true})),
            )
            .await;
        // The day may turn in Seoul between the two readings of the clock.
        if chrono::Utc::now().with_timezone(&TZ).date_naive() != today {
            return;
        }
        assert_eq!(status, StatusCode::BAD_REQUEST, "{date}: {reply}");
        let error = reply["error"].as_str().unwrap_or("");
        assert!(
            error.contains(&accepted) && error.contains("Asia/Seoul"),
            "{date}: {error}"
        );
        let runs = admin.runs.latest(Some(&date), 10).await.expect("runs");
        assert!(runs.is_empty(), "{date}: nothing recorded: {runs:?}");
    }
    let (status, run) = admin
        .ok("POST", "/api/runs", Some(json!({"date": "2000-01-01"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "the first day accepted: {run}");
}
