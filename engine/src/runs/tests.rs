use super::*;

#[test]
fn run_ids_are_a_date_and_a_number() {
    assert_eq!(run_id("2026-11-24", 3), "2026-11-24-r3");
    assert!(is_run_id(&run_id("2026-11-24", 3)));
    assert!(
        is_run_id("2026-02-31-r1"),
        "the form only: no such day is merely not found"
    );
    for bad in [
        "",
        "2026-11-24",
        "2026-11-24-r",
        "2026-11-24-rx",
        "26-11-24-r1",
        "2026-11-24-r1-x",
    ] {
        assert!(!is_run_id(bad), "{bad:?}");
    }
}
