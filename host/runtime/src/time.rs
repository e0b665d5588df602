//! The host's clock. The policy has none: every request carries the time a
//! host read here, and a key's not-after is judged against it.

use std::time::{SystemTime, UNIX_EPOCH};

use keyscope_policy::Millis;

/// Now, in milliseconds since the Unix epoch. A clock set before 1970 reads
/// as 0 (every not-after still in the future: a key is never expired early
/// by a broken clock, only late, as by a slow one).
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}

/// `DURATION` as milliseconds: `0`, or a whole number and a unit (`ms`,
/// `s`, `m`, `h`, `d`): `90s`, `15m`, `24h`, `7d`. The error says what
/// would be accepted.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    let shown = || printable(text);
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!(
            "`{}` has no unit; say `90s`, `15m`, `12h` or `30d`",
            shown()
        )
    })?;
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit `{}`; use ms, s, m, h or d",
                printable(unit)
            ));
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{}` does not start with a whole number", shown()))?;
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("`{}` is too long", shown()))
}

/// At most 40 characters of `text`, control characters escaped.
fn printable(text: &str) -> String {
    text.chars()
        .take(40)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_parse_and_bad_ones_are_named() {
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert!(parse_duration_ms("15").unwrap_err().contains("no unit"));
        assert!(
            parse_duration_ms("5y")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration_ms("m").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }
}
