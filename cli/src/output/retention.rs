//! Output of `pgsnap job retention JOB --dry-run`: one row per successful
//! dump of the job, newest first, with what retention does and why.
use comfy_table::Table;
use pgsnapman_proto::v1;
use serde_json::{Value, json};

use super::{json as j, table as t};

/// `keep (daily, weekly)` or `remove`.
fn verdict_text(v: &v1::RetentionVerdict) -> String {
    if v.keep {
        format!("keep ({})", v.reasons.join(", "))
    } else {
        "remove".to_string()
    }
}

pub fn preview_json(p: &v1::RetentionPreview) -> Value {
    json!({
        "job_id": p.job.as_ref().map_or(0, |j| j.id),
        "retention": j::retention(p.retention.as_ref()),
        "timezone": p.timezone,
        "keep": p.verdicts.iter().filter(|v| v.keep).count(),
        "remove": p.verdicts.iter().filter(|v| !v.keep).count(),
        "dumps": p.verdicts.iter().map(|v| {
            let d = v.dump.clone().unwrap_or_default();
            json!({
                "id": d.id,
                "dump_uuid": d.dump_uuid,
                "started_at": j::timestamp(d.started_at.as_ref()),
                "pinned": d.pinned,
                "keep": v.keep,
                "reasons": v.reasons,
            })
        }).collect::<Vec<_>>(),
    })
}

pub fn preview_table(p: &v1::RetentionPreview) -> Table {
    let mut table = t::with_header(&["ID", "STARTED", "VERDICT"]);
    for v in &p.verdicts {
        let d = v.dump.clone().unwrap_or_default();
        table.add_row(vec![
            d.id.to_string(),
            t::time(d.started_at.as_ref()),
            verdict_text(v),
        ]);
    }
    table
}

/// The line above the table: the policy and the totals.
pub fn preview_note(p: &v1::RetentionPreview) -> String {
    let r = p.retention.unwrap_or_default();
    let keep = p.verdicts.iter().filter(|v| v.keep).count();
    format!(
        "job {}: keep {} daily, {} weekly, {} monthly, {} yearly (days in {}); \
         {keep} kept, {} removed by the next run",
        p.job.as_ref().map_or(0, |j| j.id),
        r.keep_daily,
        r.keep_weekly,
        r.keep_monthly,
        r.keep_yearly,
        p.timezone,
        p.verdicts.len() - keep,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_as_keep_with_reasons_or_remove() {
        let kept = v1::RetentionVerdict {
            keep: true,
            reasons: vec!["newest".into(), "daily".into()],
            dump: None,
        };
        assert_eq!(verdict_text(&kept), "keep (newest, daily)");
        assert_eq!(verdict_text(&v1::RetentionVerdict::default()), "remove");
    }
}
