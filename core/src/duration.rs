//! Go-style durations (`90s`, `1h30m`, `1.5h`) plus days (`2d`), as users
//! write them in annotations and on the command line.

use std::time::Duration;

use crate::Error;

const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    // Go accepts both: U+00B5 (micro sign, what Go's String() prints) and
    // U+03BC (Greek mu, what most keyboards and input methods produce).
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];
const DAY_NS: u64 = 86_400_000_000_000;

fn err(input: &str, reason: &'static str) -> Error {
    Error::Duration {
        input: input.to_string(),
        reason,
    }
}

/// [`parse`] shaped for clap's `value_parser`: the one duration flag parser of
/// every binary, so `--ttl 1h30m` and an annotation's `1h30m` mean the same.
pub fn flag(input: &str) -> Result<Duration, String> {
    parse(input).map_err(|e| e.to_string())
}

/// [`flag`] for intervals, where zero would mean "spin".
pub fn positive_flag(input: &str) -> Result<Duration, String> {
    match flag(input)? {
        d if d.is_zero() => Err(format!(
            "invalid duration {input:?}: must be greater than zero"
        )),
        d => Ok(d),
    }
}

/// Parses a non-negative duration. A bare `0` is zero; every other number needs
/// a unit (ns, us, ms, s, m, h, d).
pub fn parse(input: &str) -> Result<Duration, Error> {
    let s = input.trim();
    if s.is_empty() {
        return Err(err(input, "it is empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(err(input, "negative durations are not allowed"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err(input, "expected a number before each unit"));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "" => return Err(err(input, "missing unit")),
            "d" => DAY_NS,
            u => UNITS
                .iter()
                .find(|(name, _)| *name == u)
                .map(|(_, ns)| *ns)
                .ok_or_else(|| err(input, "unknown unit"))?,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(err(input, "malformed number"));
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err(input, "number too large"))?
        };
        let mut part = int
            .checked_mul(scale as u128)
            .ok_or_else(|| err(input, "too large"))?;
        let mut div = scale as u128;
        for d in frac.bytes().take(18) {
            div /= 10;
            part += (d - b'0') as u128 * div;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| err(input, "too large"))?;
        rest = tail;
    }
    if total > u64::MAX as u128 {
        return Err(err(input, "too large"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats like Go's `time.Duration.String` (`1h30m0s`, `1.5s`, `250ms`,
/// `1.5\u{b5}s`), so values round-trip with kube-exec-controller's and
/// through [`parse`] exactly: sub-second parts are kept, never rounded away.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (unit, scale) = match ns {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("\u{b5}s", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(ns, scale));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = decimal(
        u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// `value / scale` in decimal, without trailing zeros (`scale` a power of ten).
fn decimal(value: u128, scale: u128) -> String {
    let (int, rem) = (value / scale, value % scale);
    if rem == 0 {
        return int.to_string();
    }
    let width = scale.ilog10() as usize;
    let frac = format!("{rem:0width$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms_and_days() {
        let cases = [
            ("0", 0),
            ("90s", 90),
            ("15m", 900),
            ("1h30m", 5400),
            ("1.5h", 5400),
            ("2d", 172_800),
            ("1d12h", 129_600),
            (" 10m ", 600),
            ("+5s", 5),
        ];
        for (input, secs) in cases {
            assert_eq!(parse(input).unwrap(), Duration::from_secs(secs), "{input}");
        }
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
        // Micro sign (U+00B5) and Greek mu (U+03BC) both mean microseconds.
        assert_eq!(parse("7\u{b5}s").unwrap(), Duration::from_micros(7));
        assert_eq!(parse("7\u{3bc}s").unwrap(), Duration::from_micros(7));
        assert_eq!(parse("7us").unwrap(), Duration::from_micros(7));
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            ("", "empty"),
            ("3x", "unknown unit"),
            ("10", "missing unit"),
            ("-5m", "negative"),
            ("h", "number before"),
            ("1..5h", "malformed"),
            ("99999999999999999999d", "large"),
        ];
        for (input, reason) in cases {
            let e = parse(input).unwrap_err().to_string();
            assert!(e.contains(reason), "{input}: {e}");
            assert!(e.contains("1h30m"), "error should show an example: {e}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format(Duration::from_secs(120)), "2m0s");
        assert_eq!(format(Duration::from_secs(7)), "7s");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn formats_keep_sub_seconds() {
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(90_500)), "1m30.5s");
        assert_eq!(format(Duration::from_millis(3_600_001)), "1h0m0.001s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_nanos(1_500)), "1.5\u{b5}s");
        assert_eq!(format(Duration::from_nanos(42)), "42ns");
        assert_eq!(format(Duration::from_nanos(1_000_000_001)), "1.000000001s");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse(&s);
        }

        #[test]
        fn format_round_trips(secs in 0u64..10_000_000) {
            let d = Duration::from_secs(secs);
            proptest::prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }

        #[test]
        fn format_round_trips_to_the_nanosecond(ns in 0u64..u64::MAX) {
            let d = Duration::from_nanos(ns);
            proptest::prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
