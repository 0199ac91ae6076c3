use super::*;

#[test]
fn a_pace_survives_its_field() {
    let pace = Pace {
        queue: "q".into(),
        rate: 12.5,
        batch: 300,
        budget: Some(40.0),
        cost: Some(Cost {
            per_batch: 30.0,
            per_document: 0.25,
        }),
    };
    let back = parse_pace("q", &pace_field(&pace)).expect("parses");
    assert_eq!((back.rate, back.batch, back.cost), (12.5, 300, pace.cost));
    let unlearned = Pace { cost: None, ..pace };
    assert_eq!(
        parse_pace("q", &pace_field(&unlearned)).map(|p| p.cost),
        Some(None)
    );
    assert_eq!(parse_pace("q", ""), None);
}
