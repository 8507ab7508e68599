//! The policy test runner: the shipped suite passes, broken cases fail naming the path, bad files are problems.

use std::path::{Path, PathBuf};

use super::load_tests::{SHIPPED, shipped};
use super::{Policy, run_policy_tests};

const SHIPPED_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy-tests");

/// A scratch directory holding one test file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn with(name: &str, test_file: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "caf-broker-policy-tests-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cases.toml"), test_file).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_shipped_policy_passes_the_shipped_policy_tests() {
    let report = run_policy_tests(&shipped(), Path::new(SHIPPED_TESTS))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(report.passed(), "{report}");
    let text = std::fs::read_to_string(Path::new(SHIPPED_TESTS).join("default.toml")).unwrap();
    assert_eq!(
        report.cases,
        text.lines().filter(|l| *l == "[[case]]").count()
    );
    assert!(report.cases >= 20);
}

#[test]
fn the_shipped_tests_fail_naming_the_path_when_a_purpose_releases_too_much() {
    let text = std::fs::read_to_string(SHIPPED).unwrap();
    // verification_radiation is the first purpose in the file: widen it with a name.
    let widened = text.replacen(
        "  \"numero_allocataire\",\n",
        "  \"numero_allocataire\",\n  \"allocataire.prenoms\",\n",
        1,
    );
    assert_ne!(widened, text);
    let policy = Policy::from_toml(&widened, "widened.toml").unwrap();
    let report = run_policy_tests(&policy, Path::new(SHIPPED_TESTS)).unwrap();
    assert!(!report.passed());
    let exact = report
        .failures
        .iter()
        .find(|f| {
            f.case
                == "radiated dossier abroad shows exactly the radiation facts to a consular agent"
        })
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(exact.path.as_deref(), Some("allocataire"));
    assert!(exact.file.ends_with("default.toml"));
    assert_eq!(exact.message, "released, but not expected");
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.path.as_deref() == Some("allocataire") && f.message.starts_with("must not"))
    );
    assert!(
        !report.to_string().contains("JEANNE"),
        "failure messages never carry record values"
    );
}

const BROKEN_CASES: &str = r#"
[[case]]
name = "wrong motive"
role = "agent_consulaire"
purpose = "verification_radiation"
record_inline = { radiation = { motif = "DECES", date_effet = "2024-03-18" }, statut_dossier = "radie" }
expect_data = { radiation = { motif = "DECES" }, numero_allocataire = "1" }

[[case]]
name = "contains checks"
role = "agent_consulaire"
purpose = "verification_radiation"
record_inline = '{"radiation": null, "prestations": [{"code": "AF"}]}'
must_contain = ["prestations[].code", "prestations[].etat", "allocataire.prenoms"]
must_not_contain = ["radiation", "nir"]

[[case]]
name = "expected a refusal"
role = "agent_consulaire"
purpose = "controle_fraude"
expect_refusal = "unknown-role"
"#;

#[test]
fn a_broken_case_fails_naming_the_file_the_case_and_the_path() {
    let scratch = Scratch::with("broken", BROKEN_CASES);
    let report = run_policy_tests(&shipped(), scratch.path()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(report.cases, 3);
    let failures: Vec<(&str, Option<&str>, &str)> = report
        .failures
        .iter()
        .map(|f| (f.case.as_str(), f.path.as_deref(), f.message.as_str()))
        .collect();
    assert_eq!(
        failures,
        [
            (
                "wrong motive",
                Some("numero_allocataire"),
                "expected in the output, but not released"
            ),
            (
                "wrong motive",
                Some("radiation.motif"),
                "the string differs (values not shown)"
            ),
            (
                "wrong motive",
                Some("radiation.date_effet"),
                "released, but not expected"
            ),
            (
                "wrong motive",
                Some("statut_dossier"),
                "released, but not expected"
            ),
            (
                "contains checks",
                Some("prestations[].etat"),
                "must be in the output, and is not"
            ),
            (
                "contains checks",
                Some("allocataire.prenoms"),
                "must be in the output, and is not"
            ),
            (
                "contains checks",
                Some("radiation"),
                "must not be in the output, and is"
            ),
            (
                "expected a refusal",
                None,
                "expected refusal `unknown-role`, but the purpose was permitted"
            ),
        ]
    );
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.file.ends_with("cases.toml"))
    );
    let text = report.to_string();
    assert!(
        text.contains("cases.toml: case `wrong motive`: `radiation.motif`: the string differs"),
        "{text}"
    );
    assert!(!text.contains("DECES"), "{text}");
}

const MALFORMED: &str = r#"[[case]]
name = "a"
role = "agent_consulaire"
purpose = "verification_radiation"
record = "fixtures/absent.json"
must_contain = ["statut_dossier"]
colour = "blue"

[[case]]
name = "a"
role = "Agent"
purpose = "verification_radiation"
record_inline = { statut_dossier = "actif" }
record = "x.json"
expect_refusal = "forbidden"

[[case]]
name = "c"
role = "agent_consulaire"
purpose = "verification_radiation"
record_inline = { date = 2024-09-30 }
expect_data = { statut_dossier = "actif" }
expect_refusal = "unknown-role"

[[case]]
name = "d"
role = "agent_consulaire"
purpose = "verification_radiation"
record_inline = { statut_dossier = "actif" }
"#;

#[test]
fn malformed_test_files_report_every_problem_with_its_line() {
    let scratch = Scratch::with("malformed", MALFORMED);
    let err = run_policy_tests(&shipped(), scratch.path()).unwrap_err();
    let text = err.to_string();
    for expected in [
        ":5: case[0].record: cannot read fixture `fixtures/absent.json`",
        ":7: case[0].colour: unknown key",
        ":11: case[1].role: a role is 1 to 64 characters",
        "case[1]: give `record` or `record_inline`, not both",
        ":15: case[1].expect_refusal: expected one of",
        ":21: case[2].record_inline.date: TOML dates have no JSON form",
        "case[2]: `expect_refusal` cannot be combined with output expectations",
        "case[3]: a case needs `expect_data`, `must_contain`, `must_not_contain` or `expect_refusal`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_missing_tests_directory_is_a_problem() {
    let err = run_policy_tests(&shipped(), Path::new("/nonexistent/policy-tests")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read the policy tests directory"),
        "{err}"
    );
}
