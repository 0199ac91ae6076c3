use super::*;

fn summary<'a>(series: &'a Series, strategy: &str) -> &'a Summary {
    series
        .summaries
        .iter()
        .find(|s| s.strategy == strategy)
        .expect("strategy simulated")
}

#[test]
fn the_seeds_day_naive_pegs_every_core_bull_takes_hours_tidegate_holds_and_finishes_first() {
    let series = day(50_000, 200.0);
    let naive = summary(&series, "naive");
    assert!(naive.peak_cpu >= 0.9 * 800.0, "{naive:?}");
    assert!(
        naive.finished && (480..=720).contains(&naive.wall),
        "{naive:?}"
    );
    let fixed = summary(&series, "fixed");
    assert!(fixed.finished && fixed.wall >= 10_000, "{fixed:?}");
    assert!(fixed.peak_cpu < 200.0, "{fixed:?}");
    let tidegate = summary(&series, "tidegate");
    assert!(
        tidegate.finished && tidegate.wall < naive.wall / 3,
        "{tidegate:?}"
    );
    assert!(tidegate.held.is_some_and(|h| h >= 0.8), "{tidegate:?}");
    assert!(tidegate.peak_cpu <= 1.2 * 200.0, "{tidegate:?}");
    assert!(
        tidegate.service_p99 < naive.service_p99 / 10.0,
        "the service keeps its latency: {tidegate:?} vs {naive:?}"
    );
}

#[test]
fn the_csv_has_a_header_and_one_row_per_interval_per_strategy() {
    let series = day(2_000, 200.0);
    let text = csv(&series);
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("t_seconds,strategy,"))
    );
    for s in &series.summaries {
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.split(',').nth(1) == Some(s.strategy))
            .collect();
        assert_eq!(rows.len() as u64, s.wall, "{}", s.strategy);
        assert!(rows[0].starts_with("1,"));
    }
    assert_eq!(lines.count(), series.rows.len());
}

#[test]
fn it_is_deterministic() {
    assert_eq!(day(3_000, 200.0), day(3_000, 200.0));
}

#[test]
fn the_chart_and_the_table_say_simulation() {
    let series = day(2_000, 200.0);
    let dir = std::env::temp_dir().join(format!("tidegate-simulate-unit-{}", std::process::id()));
    let [csv_path, svg_path] = write_files(&series, &dir).expect("write files");
    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    assert!(svg.starts_with("<svg") && svg.contains("simulat"), "{svg}");
    assert!(csv_path.exists());
    assert!(table(&series).starts_with("SIMULATION"));
    let _ = std::fs::remove_dir_all(&dir);
}
