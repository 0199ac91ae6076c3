use super::*;

fn scale() -> Scale {
    Scale {
        target: 100.0,
        interval: 1.0,
        ceiling: 20_000.0,
    }
}

#[test]
fn a_window_holds_the_share_of_each_batch_that_ran_in_it() {
    let b = |class, start, end, documents| Batch {
        class,
        start,
        end,
        documents,
    };
    let batches = [
        b(0, 1.0, Some(3.0), 100.0),  // ran 1-3: half of it in [2, 4)
        b(0, 2.5, Some(3.0), 10.0),   // wholly inside
        b(0, 3.5, None, 50.0),        // in flight since 3.5, expected 1 s: half by 4
        b(0, 0.0, Some(1.0), 7.0),    // before the window
        b(1, 2.0, Some(3.0), 1000.0), // another class
    ];
    let (per_batch, per_doc) = attribute(&batches, 0, 2.0, 4.0, 3.6, 1.0);
    assert!(
        (per_batch - (0.5 + 1.0 + 0.5) / 2.0).abs() < 1e-9,
        "{per_batch}"
    );
    assert!(
        (per_doc - (50.0 + 10.0 + 25.0) / 2.0).abs() < 1e-9,
        "{per_doc}"
    );
    assert_eq!(attribute(&batches, 1, 2.0, 4.0, 3.6, 1.0), (0.5, 500.0));
}

/// Readings of a plant with `live` CPU where each class `k` costs `c0 + c1·n`, one batch
/// every three seconds per class, in flight 0.8 s; the probe's window lags by `lag`.
fn learn(
    model: &mut CostModel,
    live: f64,
    costs: &[(f64, f64)],
    n: &dyn Fn(usize, usize) -> f64,
    seconds: std::ops::RangeInclusive<usize>,
    lag: f64,
) {
    let classes: Vec<usize> = (0..costs.len())
        .map(|k| model.class(&format!("q{k}")))
        .collect();
    let mut batches: Vec<Batch> = Vec::new();
    for t in seconds {
        for (k, class) in classes.iter().enumerate() {
            if (t + k).is_multiple_of(3) {
                let start = (t - 1) as f64 + 0.1;
                batches.push(Batch {
                    class: *class,
                    start,
                    end: Some(start + 0.8),
                    documents: n(t, k),
                });
            }
        }
        let mut cpu = live;
        for (k, (c0, c1)) in costs.iter().enumerate() {
            let (b, d) = attribute(
                &batches,
                classes[k],
                t as f64 - 1.0 - lag,
                t as f64 - lag,
                t as f64,
                0.8,
            );
            cpu += c0 * b + c1 * d;
        }
        model.observe(t as f64, 1.0, cpu, &batches);
    }
}

#[test]
fn it_learns_both_costs_and_the_live_load_and_finds_the_lag() {
    let mut model = CostModel::new(scale());
    let sizes = |t: usize, _| if t.is_multiple_of(2) { 200.0 } else { 500.0 };
    learn(&mut model, 50.0, &[(40.0, 0.2)], &sizes, 1..=120, 1.0);
    let cost = model.cost(0);
    assert!((model.live() - 50.0).abs() < 3.0, "{}", model.live());
    assert!((cost.per_batch - 40.0).abs() < 8.0, "{cost:?}");
    assert!((cost.per_document - 0.2).abs() < 0.03, "{cost:?}");
    assert_eq!(model.lag(), 1.0);
}

#[test]
fn two_classes_are_told_apart() {
    let mut model = CostModel::new(scale());
    let sizes = |t: usize, k: usize| {
        if (t + k).is_multiple_of(2) {
            100.0
        } else {
            300.0
        }
    };
    learn(
        &mut model,
        20.0,
        &[(60.0, 0.05), (10.0, 0.3)],
        &sizes,
        1..=240,
        0.0,
    );
    let (a, b) = (model.batch_cost(0, 300.0).0, model.batch_cost(1, 300.0).0);
    assert!((a - 75.0).abs() < 0.15 * 75.0, "class 0: {a}");
    assert!((b - 100.0).abs() < 0.15 * 100.0, "class 1: {b}");
    assert!((model.live() - 20.0).abs() < 5.0, "{}", model.live());
}

#[test]
fn a_wrong_cost_recovers_within_a_few_batches() {
    let mut model = CostModel::new(scale());
    learn(&mut model, 30.0, &[(60.0, 0.1)], &|_, _| 300.0, 1..=60, 0.0);
    let (before, _) = model.batch_cost(0, 300.0);
    assert!((before - 90.0).abs() < 15.0, "learned first: {before}");
    // The collection grew: every batch now costs three times as much. Ten batches later
    // (30 readings) the cost is known again.
    learn(
        &mut model,
        30.0,
        &[(180.0, 0.3)],
        &|_, _| 300.0,
        61..=90,
        0.0,
    );
    let (after, _) = model.batch_cost(0, 300.0);
    assert!((after - 270.0).abs() < 0.25 * 270.0, "{after}");
    assert!((model.live() - 30.0).abs() < 10.0, "{}", model.live());
}

#[test]
fn a_cost_believed_ten_times_too_high_recovers_within_a_few_batches() {
    // The failure issue 12 saw: an estimate stuck 5-10x too high paces far too slowly.
    let mut model = CostModel::new(scale());
    let class = model.class("q0");
    model.seed(
        class,
        Cost {
            per_batch: 500.0,
            per_document: 1.0,
        },
    );
    learn(
        &mut model,
        30.0,
        &[(50.0, 0.1)],
        &|t, _| if t % 2 == 0 { 200.0 } else { 400.0 },
        1..=30,
        0.0,
    );
    let (cost, _) = model.batch_cost(class, 300.0);
    assert!(
        (cost - 80.0).abs() < 0.25 * 80.0,
        "ten batches later: {cost}"
    );
}

#[test]
fn costs_stay_bounded_whatever_the_readings() {
    let mut model = CostModel::new(scale());
    let class = model.class("q0");
    let batch = |start: f64| Batch {
        class,
        start,
        end: Some(start + 0.5),
        documents: 1.0,
    };
    let mut batches = Vec::new();
    for t in 1..=50 {
        batches.push(batch(t as f64 - 0.9));
        // Absurd readings: a tiny batch explaining a thousand cores.
        model.observe(t as f64, 1.0, if t % 2 == 0 { 1e5 } else { 0.0 }, &batches);
    }
    let cost = model.cost(class);
    assert!(cost.per_batch <= 100.0 * 100.0 * 1.0, "{cost:?}");
    assert!(cost.per_document <= 100.0, "{cost:?}");
}

#[test]
fn an_unlearned_cost_is_uncertain_and_an_unknown_class_has_none() {
    let mut model = CostModel::new(scale());
    assert_eq!(model.batch_cost(0, 500.0), (0.0, f64::INFINITY));
    let class = model.class("q");
    let (mean, spread) = model.batch_cost(class, 500.0);
    assert_eq!(mean, 0.0);
    assert!(spread >= 100.0, "{spread}");
}

#[test]
fn a_step_in_the_live_load_moves_the_estimate_within_a_few_readings() {
    let mut model = CostModel::new(scale());
    learn(&mut model, 10.0, &[(50.0, 0.1)], &|_, _| 300.0, 1..=60, 0.0);
    learn(
        &mut model,
        60.0,
        &[(50.0, 0.1)],
        &|_, _| 300.0,
        61..=65,
        0.0,
    );
    assert!((model.live() - 60.0).abs() < 10.0, "{}", model.live());
    let (cost, _) = model.batch_cost(0, 300.0);
    assert!(
        (cost - 80.0).abs() < 0.15 * 80.0,
        "the step is not a cost: {cost}"
    );
}
