//! Series a process exports only while it holds a responsibility it shares with others: leading
//! a database's write budget (the database's CPU, the limiter, the budget) or reporting a
//! queue's depth. Every process could export these facts, and with N replicas a dashboard's sum
//! would show N times each; and one that lost the responsibility would go on exporting its last
//! value. So the holder sets them here, under its own name, and [`clear`] drops them the moment
//! it no longer holds it. The `metrics` recorder cannot forget a series, so these few gauges are
//! kept here and rendered after it, with its exporter's formatting.

use std::collections::BTreeMap;
use std::sync::Mutex;

use metrics_exporter_prometheus::formatting::{
    sanitize_label_key, sanitize_label_value, write_help_line, write_metric_line, write_type_line,
};

/// A series' labels, in the order given.
type Labels = Vec<(&'static str, String)>;

/// A series: its metric name and labels.
type Series = (&'static str, Labels);

/// Each holder's series.
static HELD: Mutex<BTreeMap<String, BTreeMap<Series, f64>>> = Mutex::new(BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, BTreeMap<String, BTreeMap<Series, f64>>> {
    // A panic elsewhere while holding the lock leaves plain data behind: still usable.
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets a gauge that `holder` exports while it holds its responsibility.
pub fn set(holder: &str, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    held()
        .entry(holder.to_owned())
        .or_default()
        .insert((name, labels), value);
}

/// Drops every series of `holder`: it no longer holds the responsibility.
pub fn clear(holder: &str) {
    held().remove(holder);
}

/// Appends the held series to `out` in the exposition format, each metric once with its help
/// from the catalogue.
pub(crate) fn render(out: &mut String) {
    let mut by_name: BTreeMap<&'static str, BTreeMap<Labels, f64>> = BTreeMap::new();
    for series in held().values() {
        for ((name, labels), value) in series {
            by_name
                .entry(name)
                .or_default()
                .insert(labels.clone(), *value);
        }
    }
    for (name, series) in by_name {
        if let Some(metric) = super::CATALOGUE.iter().find(|m| m.name == name) {
            write_help_line(out, name, metric.help);
        }
        write_type_line(out, name, "gauge");
        for (labels, value) in series {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", sanitize_label_key(k), sanitize_label_value(v)))
                .collect();
            write_metric_line::<&str, f64>(out, name, None, &labels, None, value, None);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holders_series_render_until_it_lets_go() {
        set("test-a", "tidegate_test_held", &[("queue", "q\"1")], 3.0);
        set("test-b", "tidegate_test_held", &[("queue", "q2")], 4.0);
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("# TYPE tidegate_test_held gauge\n"), "{out}");
        assert_eq!(out.matches("# TYPE tidegate_test_held").count(), 1, "{out}");
        assert!(
            out.contains("tidegate_test_held{queue=\"q\\\"1\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("tidegate_test_held{queue=\"q2\"} 4\n"),
            "{out}"
        );
        clear("test-a");
        let mut out = String::new();
        render(&mut out);
        assert!(!out.contains("q\\\"1"), "{out}");
        assert!(
            out.contains("tidegate_test_held{queue=\"q2\"} 4\n"),
            "{out}"
        );
        clear("test-b");
        let mut out = String::new();
        render(&mut out);
        assert!(!out.contains("tidegate_test_held"), "{out}");
    }
}
