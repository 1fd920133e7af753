//! `buildr k8s check`'s table: one row per permission, admission and pool, with what to do
//! under each that fails. Rendering only; what the rows mean is [`Report`]'s.

use std::fmt::Write;

use super::{Admission, PoolState, Report, Verdict};
use crate::backend::k8s::api::one_line;

impl Report {
    /// One row per permission and one for the pod's admission; under a missing permission the
    /// Role rule that grants it, under a refused pod the API server's reason.
    pub fn table(&self) -> String {
        // (what, answer, what for, the line under it)
        let mut rows: Vec<(String, &str, String, Option<String>)> = self
            .permissions
            .iter()
            .map(|(permission, verdict)| {
                let (answer, detail) = match verdict {
                    Verdict::Allowed => ("yes", None),
                    Verdict::Missing => (
                        "MISSING",
                        Some(format!("grant it with: {}", permission.rule())),
                    ),
                    Verdict::Unknown(why) => ("UNKNOWN", Some(format!("cannot ask: {why}"))),
                };
                (
                    permission.to_string(),
                    answer,
                    permission.purpose.to_string(),
                    detail,
                )
            })
            .collect();
        let (answer, detail) = match &self.admission {
            Admission::Admitted => ("yes", None),
            Admission::Refused(why) => ("REFUSED", Some(one_line(why))),
            Admission::NotChecked => (
                "UNKNOWN",
                Some("not asked: creating pods is not allowed".to_string()),
            ),
        };
        rows.push((
            "admission of buildr's pod".to_string(),
            answer,
            "a dry-run create of the pod a run makes (Pod Security, LimitRange, quotas, policies)"
                .to_string(),
            detail,
        ));
        for pool in &self.pools {
            let (answer, what, detail) = match &pool.state {
                PoolState::Ready { ready, size } if *ready > 0 => {
                    ("yes", format!("{ready} of {size} warm pods ready"), None)
                }
                PoolState::Ready { size, .. } => (
                    "EMPTY",
                    format!("0 of {size} warm pods ready: runs start their own pods"),
                    None,
                ),
                PoolState::Failing(why) => (
                    "FAILING",
                    "its pods cannot start".to_string(),
                    Some(one_line(why)),
                ),
                PoolState::Missing => (
                    "MISSING",
                    "no such BuildrPool".to_string(),
                    Some("create it (README, Warm pools), or run without --pool".to_string()),
                ),
                PoolState::Unknown(why) => (
                    "UNKNOWN",
                    "cannot read BuildrPools".to_string(),
                    Some(why.clone()),
                ),
            };
            rows.push((format!("pool {}", pool.name), answer, what, detail));
        }
        let width = rows
            .iter()
            .map(|row| row.0.len())
            .chain(["PERMISSION".len()])
            .max()
            .unwrap_or_default();
        let indent = " ".repeat(width + 2 + 7 + 2);
        let mut out = format!("namespace {}\n", self.namespace);
        let _ = writeln!(out, "{:width$}  {:7}  FOR", "PERMISSION", "ALLOWED");
        for (name, answer, what, detail) in rows {
            let _ = writeln!(out, "{name:width$}  {answer:7}  {what}");
            if let Some(detail) = detail {
                let _ = writeln!(out, "{indent}{detail}");
            }
        }
        let _ = writeln!(out, "\n{}", self.trust_note());
        out
    }

    /// What no permission shows: RBAC cannot limit exec to one's own pods when their names are
    /// generated, so whoever may run here may also reach into every other run here.
    fn trust_note(&self) -> String {
        format!(
            "note: namespace {} is one trust domain: whoever may run buildr here may also exec \
             into the other runs' pods, read their secrets and change the files they bring back; \
             give each user or CI pipeline its own namespace (README, Security)",
            self.namespace
        )
    }
}
