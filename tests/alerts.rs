//! The alert rules in `deploy/rules/` are valid and do what their unit tests say, checked by
//! Prometheus' own `promtool` (Debian's prometheus package, which `scripts/services` installs).

use std::process::Command;

fn promtool(args: &[&str]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rules");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool on PATH (scripts/services installs it)");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid() {
    promtool(&["check", "rules", "tidegate.yml"]);
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "tidegate.test.yml"]);
}
