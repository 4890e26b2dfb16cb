//! Calendar arithmetic in UTC (exported dates and timestamps, usage months), by the
//! days-from-civil algorithm, so no time-zone database is needed.

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The `YYYY-MM-DD` at the start of an ISO date or date-time, as days since the epoch.
pub fn parse_date_prefix(text: &str) -> Option<i32> {
    let date = text.trim().get(..10)?;
    let bytes = date.as_bytes();
    if bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i64 = date[..4].parse().ok()?;
    let month: u32 = date[5..7].parse().ok()?;
    let day: u32 = date[8..10].parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    i32::try_from(days_from_civil(year, month, day)).ok()
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM` of a time in epoch milliseconds.
pub fn year_month(ms: i64) -> String {
    let (y, m, _) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}")
}

pub fn iso_date(days: i32) -> String {
    let mut out = String::with_capacity(10);
    push_iso_date(days, &mut out);
    out
}

/// Appends `YYYY-MM-DD`; by hand, because the CSV export writes two dates a row and
/// `format!` costs more than the rest of the cell.
pub fn push_iso_date(days: i32, out: &mut String) {
    let (y, m, d) = civil_from_days(i64::from(days));
    push_ymd(y, m, d, out);
}

fn push_ymd(y: i64, m: u32, d: u32, out: &mut String) {
    if (0..=9999).contains(&y) {
        push_digits(out, y as u32, 4);
    } else {
        out.push_str(&format!("{y:04}"));
    }
    out.push('-');
    push_digits(out, m, 2);
    out.push('-');
    push_digits(out, d, 2);
}

/// Appends `value` as exactly `width` decimal digits (`value < 10^width`).
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_millis(ms, &mut out);
    out
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` (see [`push_iso_date`] for why by hand).
pub fn push_rfc3339_millis(ms: i64, out: &mut String) {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000) as u32;
    let (y, m, d) = civil_from_days(days);
    push_ymd(y, m, d, out);
    out.push('T');
    push_digits(out, rest / 3_600_000, 2);
    out.push(':');
    push_digits(out, rest / 60_000 % 60, 2);
    out.push(':');
    push_digits(out, rest / 1000 % 60, 2);
    out.push('.');
    push_digits(out, rest % 1000, 3);
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_format_in_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            iso_date(parse_date_prefix("2024-02-29T10:00:00Z").unwrap()),
            "2024-02-29"
        );
        assert_eq!(parse_date_prefix("2023-02-29"), None);
        assert_eq!(parse_date_prefix("29/02/2024"), None);
        assert_eq!(parse_date_prefix("1969-12-31"), Some(-1));
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_millis(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso_date(-719_528), "0000-01-01");
        assert_eq!(iso_date(2_932_897), "10000-01-01");
    }

    #[test]
    fn usage_months_are_utc() {
        assert_eq!(year_month(0), "1970-01");
        assert_eq!(year_month(1_795_000_000_000), "2026-11");
        assert_eq!(year_month(951_782_400_000), "2000-02"); // 2000-02-29
    }
}
