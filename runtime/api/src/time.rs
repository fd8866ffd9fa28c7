//! RFC 3339 timestamps ↔ Unix time (image configs carry RFC 3339; the API
//! reports Unix seconds for lists and RFC 3339 with nanoseconds for `/info`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2024-05-01T12:34:56.789Z` or with an offset (`+02:00`) → Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let tz_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, tz) = rest.split_at(tz_at);
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let hour: i64 = c.next()?.parse().ok()?;
    let minute: i64 = c.next()?.parse().ok()?;
    let second: i64 = c.next()?.parse().ok()?;
    let offset = match tz.as_bytes().first() {
        Some(sign @ (b'+' | b'-')) => {
            let (h, m) = tz[1..].split_once(':').unwrap_or((&tz[1..], "0"));
            let secs = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => 0,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Unix nanoseconds → `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn format_rfc3339_nanos(nanos: i128) -> String {
    let nanos = i64::try_from(nanos).unwrap_or(i64::MAX);
    berth_engine::containers::store::format_time(nanos)
}

/// Docker's `since`/`until`: Unix seconds with an optional fraction
/// (`1700000000.5`), or RFC 3339. Returns Unix nanoseconds.
pub fn parse_timestamp(s: &str) -> Option<i128> {
    if let Some(secs) = parse_rfc3339(s) {
        return Some(i128::from(secs) * 1_000_000_000);
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i128 = whole.parse().ok()?;
    let mut frac_digits: String = frac.chars().take(9).collect();
    if !frac_digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while frac_digits.len() < 9 {
        frac_digits.push('0');
    }
    let frac: i128 = frac_digits.parse().ok()?;
    Some(whole * 1_000_000_000 + frac)
}

/// Now, as RFC 3339 with nanoseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339_nanos(now_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Some(1_735_689_600));
        assert_eq!(
            parse_rfc3339("2025-01-01T02:00:00.123456+02:00"),
            Some(1_735_689_600)
        );
        assert_eq!(
            format_rfc3339_nanos(1_735_689_600_000_000_001),
            "2025-01-01T00:00:00.000000001Z"
        );
        assert_eq!(parse_timestamp("12.5"), Some(12_500_000_000));
        assert_eq!(parse_timestamp("x"), None);
    }
}
