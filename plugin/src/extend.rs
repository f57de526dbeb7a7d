//! The extension a `kubectl sessions extend -d D` asks for: the pod's current
//! extension plus D, so repeated requests add up. The webhook caps the total
//! and records the requester from the authenticated request.

use std::collections::BTreeMap;
use std::time::Duration;

use sessionguard_core::duration;
use sessionguard_core::interaction::Interaction;

use crate::error::{Error, Result};

/// Parses `-d`: a positive Go-style duration or days.
pub fn requested(input: &str) -> Result<Duration> {
    let d = duration::parse(input)?;
    if d.is_zero() {
        return Err(Error::Usage(format!(
            "invalid duration {input:?}: an extension must be longer than zero; use e.g. 30m, 1h30m or 2d"
        )));
    }
    Ok(d)
}

/// The new value of the extension annotation for a pod's annotations.
pub fn new_extension(
    namespace: &str,
    pod: &str,
    annotations: &BTreeMap<String, String>,
    by: Duration,
) -> Result<String> {
    let record = Interaction::from_annotations(annotations)
        .map_err(|e| Error::Pod {
            namespace: namespace.into(),
            pod: pod.into(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| Error::NeverInteracted {
            namespace: namespace.into(),
            pod: pod.into(),
        })?;
    Ok(duration::format(record.extension.unwrap_or_default() + by))
}

#[cfg(test)]
mod tests {
    use super::*;

    use sessionguard_core::fixtures::map as ann;

    #[test]
    fn extensions_add_up() {
        let a = ann(&[
            ("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z"),
            ("sessionguard.io/ttl", "10m"),
        ]);
        let d = requested("1h30m").unwrap();
        assert_eq!(new_extension("ns", "p", &a, d).unwrap(), "1h30m0s");
        let mut b = a.clone();
        b.insert("sessionguard.io/extension".into(), "30m".into());
        assert_eq!(
            new_extension("ns", "p", &b, requested("2d").unwrap()).unwrap(),
            "48h30m0s"
        );
    }

    #[test]
    fn clear_errors() {
        let e = requested("3x").unwrap_err().to_string();
        assert!(
            e.contains("\"3x\"") && e.contains("unknown unit") && e.contains("1h30m"),
            "{e}"
        );
        assert!(
            requested("0")
                .unwrap_err()
                .to_string()
                .contains("longer than zero")
        );
        let e = new_extension("ns", "p", &BTreeMap::new(), Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(e.contains("never interacted"), "{e}");
    }
}
