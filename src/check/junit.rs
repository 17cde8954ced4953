//! `pgbaseline check --output junit`: the report as JUnit XML, the format CI systems (GitLab,
//! Jenkins, GitHub test reporters, Azure Pipelines) render natively. One test suite per database,
//! one test case per control; a control out of compliance is a failure carrying the observed and
//! expected values, one that could not be evaluated or fixed is an error.

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

use crate::api::FindingStatus;

use super::{Report, ReportDatabase, ReportFinding};

/// The name of the whole report and of the suite that lists policies which checked nothing.
const REPORT_NAME: &str = "pgbaseline check";
const POLICIES_SUITE: &str = "pgbaseline policies";

impl Report {
    /// The report as JUnit XML.
    pub fn junit(&self) -> Result<String, quick_junit::SerializeError> {
        let mut report = quick_junit::Report::new(REPORT_NAME);
        for db in &self.databases {
            report.add_test_suite(database_suite(db));
        }
        if !self.unmatched_policies.is_empty() || !self.unchecked_policies.is_empty() {
            report.add_test_suite(self.policies_suite());
        }
        report.to_string()
    }

    /// A policy that selected or checked nothing fails the gate (exit 3) and shows as a failed
    /// case, so a tag typo is as visible in the CI's test view as in the exit status.
    fn policies_suite(&self) -> TestSuite {
        let mut suite = TestSuite::new(POLICIES_SUITE);
        let unmatched = self.unmatched_policies.iter().map(|p| {
            (
                p,
                "SelectedNothing",
                "selected no database: check its selector (tags, identifiers, engines, region)",
            )
        });
        let unchecked = self.unchecked_policies.iter().map(|p| {
            (
                p,
                "CheckedNothing",
                "checks nothing: its posture switches on no control",
            )
        });
        for (policy, kind, text) in unmatched.chain(unchecked) {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_type(kind)
                .set_message(format!("policy {policy} {text}"));
            let mut case = TestCase::new(policy.as_str(), status);
            case.set_classname(POLICIES_SUITE);
            suite.add_test_case(case);
        }
        suite
    }
}

fn database_suite(db: &ReportDatabase) -> TestSuite {
    let mut suite = TestSuite::new(suite_name(db));
    suite.add_properties([
        Property::new("id", db.id.as_str()),
        Property::new("kind", db.kind.as_str()),
        Property::new("region", db.region.as_str()),
        Property::new("engine", db.engine.as_str()),
    ]);
    for finding in &db.findings {
        suite.add_test_case(finding_case(db, finding));
    }
    suite
}

/// `<region>/<kind>/<id>`: unique per database, and reads as a path in CI test trees.
fn suite_name(db: &ReportDatabase) -> String {
    format!("{}/{}/{}", db.region, db.kind.as_str(), db.id)
}

fn finding_case(db: &ReportDatabase, finding: &ReportFinding) -> TestCase {
    let kind = match finding.status {
        FindingStatus::Compliant | FindingStatus::Remediated => None,
        FindingStatus::NonCompliant | FindingStatus::PendingReboot | FindingStatus::ReportOnly => {
            Some(NonSuccessKind::Failure)
        }
        FindingStatus::Error => Some(NonSuccessKind::Error),
    };
    let status = match kind {
        None => TestCaseStatus::success(),
        Some(kind) => {
            let mut status = TestCaseStatus::non_success(kind);
            status
                .set_type(finding.status.as_str())
                .set_message(failure_message(finding))
                .set_description(failure_description(finding));
            status
        }
    };
    let mut case = TestCase::new(finding.control.as_str(), status);
    case.set_classname(suite_name(db));
    case.add_properties([
        Property::new("status", finding.status.as_str()),
        Property::new("observed", finding.observed.as_str()),
        Property::new("expected", finding.expected.as_str()),
        Property::new("policy", finding.policy.as_str()),
    ]);
    case
}

/// One line: what is, what should be.
fn failure_message(finding: &ReportFinding) -> String {
    match (finding.observed.is_empty(), finding.expected.is_empty()) {
        (false, false) => format!(
            "observed: {}; expected: {}",
            finding.observed, finding.expected
        ),
        (false, true) => format!("observed: {}", finding.observed),
        (true, false) => format!("expected: {}", finding.expected),
        (true, true) => finding.status.as_str().to_string(),
    }
}

/// The lines a CI system shows when the case is opened.
fn failure_description(finding: &ReportFinding) -> String {
    let mut text = format!(
        "{}\nobserved: {}\nexpected: {}\npolicy: {}",
        finding.status.as_str(),
        finding.observed,
        finding.expected,
        finding.policy
    );
    if !finding.message.is_empty() {
        text.push('\n');
        text.push_str(&finding.message);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ControlId, DatabaseKind};
    use crate::check::ReportSummary;

    fn finding(control: ControlId, status: FindingStatus) -> ReportFinding {
        ReportFinding {
            control,
            severity: crate::posture::catalogue::severity(control),
            status,
            observed: "rds.force_ssl=0".into(),
            expected: "rds.force_ssl=1".into(),
            message: "set it in the parameter group".into(),
            policy: "team/baseline".into(),
        }
    }

    #[test]
    fn each_control_is_a_case_and_only_passing_statuses_pass() {
        let report = Report {
            summary: ReportSummary::default(),
            databases: vec![ReportDatabase {
                id: "orders & <co>".into(),
                kind: DatabaseKind::Instance,
                region: "eu-west-1".into(),
                engine: "postgres".into(),
                compliant: false,
                findings: vec![
                    finding(ControlId::ForceSsl, FindingStatus::NonCompliant),
                    finding(ControlId::MinTlsVersion, FindingStatus::Compliant),
                    finding(ControlId::StorageEncryption, FindingStatus::Error),
                    finding(ControlId::LogRetention, FindingStatus::Remediated),
                ],
            }],
            unmatched_policies: vec!["team/typo".into()],
            ..Report::default()
        };
        let xml = report.junit().expect("serializes");
        assert!(xml.contains(r#"tests="5""#), "{xml}");
        assert!(xml.contains(r#"failures="2""#), "{xml}");
        assert!(xml.contains(r#"errors="1""#), "{xml}");
        assert!(
            xml.contains("eu-west-1/Instance/orders &amp; &lt;co&gt;"),
            "{xml}"
        );
        assert!(
            xml.contains("observed: rds.force_ssl=0; expected: rds.force_ssl=1"),
            "{xml}"
        );
        assert!(
            xml.contains("policy team/typo selected no database"),
            "{xml}"
        );
    }
}
