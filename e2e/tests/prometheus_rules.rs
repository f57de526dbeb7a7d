//! The alert rules with promtool (Debian's prometheus package): `check rules` and the
//! unit tests in deploy/prometheus/sessionguard-alerts_test.yaml, which must cover
//! every alert both firing and not firing, and must notice a changed threshold.

mod chart_support;

use std::collections::BTreeMap;
use std::path::Path;

use chart_support::{self as chart, check, invalid};
use serde_json::Value;
use sessionguard_e2e::{Result, paths};

fn rules_dir() -> std::path::PathBuf {
    paths::repo_root().join("deploy/prometheus")
}

fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
    Ok(serde_yaml::from_str(&text)?)
}

#[test]
fn promtool_check_and_unit_tests_pass() -> Result<()> {
    let Some(promtool) = chart::external_tool("promtool", "promtool_check_and_unit_tests_pass")?
    else {
        return Ok(());
    };
    let dir = rules_dir();
    let rules = dir.join("sessionguard-alerts.yaml").display().to_string();
    let out = chart::run(&promtool, &["check", "rules", &rules])?;
    check(
        out.contains("SUCCESS"),
        format!("promtool check rules:\n{out}"),
    )?;
    let tests = dir
        .join("sessionguard-alerts_test.yaml")
        .display()
        .to_string();
    let out = chart::run(&promtool, &["test", "rules", &tests])?;
    check(
        out.contains("SUCCESS"),
        format!("promtool test rules:\n{out}"),
    )?;
    Ok(())
}

#[test]
fn every_alert_is_tested_firing_and_silent() -> Result<()> {
    let dir = rules_dir();
    let rules = load(&dir.join("sessionguard-alerts.yaml"))?;
    let alerts: Vec<String> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    check(alerts.len() >= 5, format!("alerts: {alerts:?}"))?;
    let tests = load(&dir.join("sessionguard-alerts_test.yaml"))?;
    // alert -> (cases where it fires, cases where it must not)
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in tests["tests"].as_array().into_iter().flatten() {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap_or_default().to_string();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let e = seen.entry(name).or_default();
            if fires { e.0 += 1 } else { e.1 += 1 }
        }
    }
    for a in &alerts {
        let (fires, silent) = seen.get(a).copied().unwrap_or_default();
        check(
            fires > 0 && silent > 0,
            format!("{a}: {fires} firing and {silent} silent test cases; both are needed"),
        )?;
    }
    Ok(())
}

/// The unit tests are tied to the threshold: rendered with a higher one, the
/// long-login case that fires at 8h must fail.
#[test]
fn unit_tests_notice_a_changed_login_threshold() -> Result<()> {
    let Some(promtool) =
        chart::external_tool("promtool", "unit_tests_notice_a_changed_login_threshold")?
    else {
        return Ok(());
    };
    let tmp = std::env::temp_dir().join(format!("sessionguard-rules-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| invalid(format!("{}: {e}", tmp.display())))?;
    let rules = chart::rules_file(&["alerts.longLogin.thresholdSeconds=30000"])?;
    std::fs::write(tmp.join("sessionguard-alerts.yaml"), rules)
        .map_err(|e| invalid(e.to_string()))?;
    std::fs::copy(
        rules_dir().join("sessionguard-alerts_test.yaml"),
        tmp.join("sessionguard-alerts_test.yaml"),
    )
    .map_err(|e| invalid(e.to_string()))?;
    let tests = tmp
        .join("sessionguard-alerts_test.yaml")
        .display()
        .to_string();
    let result = chart::run(&promtool, &["test", "rules", &tests]);
    let _ = std::fs::remove_dir_all(&tmp);
    match result {
        Ok(out) => Err(invalid(format!(
            "promtool passed with a 30000s threshold; the tests do not pin it:\n{out}"
        ))),
        Err(e) => check(
            e.to_string().contains("SessionguardLoginTooLong"),
            format!("promtool failed, but not on the long-login alert: {e}"),
        ),
    }
}
