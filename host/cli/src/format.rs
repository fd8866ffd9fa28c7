//! Output the way Docker's CLI prints it: aligned tables, human sizes and
//! ages, and `--format` templates (`{{json .}}`, `{{.Field}}`, `table …`).

use serde_json::Value;

/// Sizes as Docker shows them: decimal units, 3 significant digits ("4.26MB").
pub fn human_size(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    // (An empty float sum is -0.0.)
    if bytes.is_nan() || bytes <= 0.0 {
        return "0B".to_string();
    }
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.3}");
    // Three significant digits, trailing zeros trimmed ("4.26", "42.1", "421").
    let digits_before = text.find('.').unwrap_or(text.len());
    let keep = if digits_before >= 3 { digits_before } else { 4 };
    let mut short: String = text.chars().take(keep).collect();
    if short.contains('.') {
        short = short
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string();
    }
    format!("{short}{}", UNITS[unit])
}

/// "2 hours ago", as Docker's `units.HumanDuration` words it.
pub fn human_age(seconds_ago: i64) -> String {
    let s = seconds_ago.max(0);
    let text = match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".to_string(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".to_string(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    };
    format!("{text} ago")
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Prints rows as columns separated by at least three spaces (Docker's tabwriter).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Renders a `--format` template (see [`crate::template`] for the Go
/// template subset: fields, `json`/`index`/`join`/…, `if`/`range`/`with`).
pub fn render_template(template: &str, value: &Value) -> String {
    crate::template::render(template, value)
}

/// Sizes in binary units as Docker's `units.BytesSize` ("1.523MiB").
pub fn binary_size(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes.is_nan() || bytes <= 0.0 {
        return "0B".to_string();
    }
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{}{}", significant(value, 4), UNITS[unit])
}

/// Go's `%.<digits>g` for values below 10^digits: at most `digits`
/// significant digits, trailing zeros trimmed.
fn significant(value: f64, digits: usize) -> String {
    let whole_digits = if value >= 1.0 {
        (value.log10().floor() as usize) + 1
    } else {
        1
    };
    let decimals = digits.saturating_sub(whole_digits);
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Unix nanoseconds as RFC 3339 in UTC with nanoseconds, as `docker
/// events` prints times.
pub fn rfc3339_nanos(nanos: i128) -> String {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Prints `rows` with `--format`: a `table …` template gets Docker's
/// column headers (from `headers`: field name → header) and aligned
/// columns; any other template is one rendered line per row.
pub fn print_formatted(template: &str, rows: &[Value], headers: &[(&str, &str)]) {
    let Some(body) = template.strip_prefix("table") else {
        for row in rows {
            println!("{}", render_template(template, row));
        }
        return;
    };
    let body = body.trim_start().replace("\\t", "\t");
    let header_of = |cell: &str| -> String {
        let mut text = cell.to_string();
        while let Some(start) = text.find("{{") {
            let Some(len) = text[start..].find("}}") else {
                break;
            };
            let action = text[start + 2..start + len].trim();
            let field = action
                .rsplit(' ')
                .next()
                .unwrap_or(action)
                .trim_start_matches('.');
            let name = headers
                .iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(field))
                .map(|(_, h)| h.to_string())
                .unwrap_or_else(|| field.to_uppercase());
            text.replace_range(start..start + len + 2, &name);
        }
        text
    };
    let header: Vec<String> = body.split('\t').map(header_of).collect();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            render_template(&body, row)
                .split('\t')
                .map(str::to_string)
                .collect()
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table(&header, &table);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(999.0), "999B");
        assert_eq!(human_size(4_261_000.0), "4.26MB");
        assert_eq!(human_size(42_100_000.0), "42.1MB");
        assert_eq!(human_size(1_000.0), "1kB");
        assert_eq!(human_size(8704.0), "8.7kB");
    }

    #[test]
    fn ages_like_docker() {
        assert_eq!(human_age(0), "Less than a second ago");
        assert_eq!(human_age(90), "About a minute ago");
        assert_eq!(human_age(7300), "2 hours ago");
        assert_eq!(human_age(3 * 86_400), "3 days ago");
    }

    #[test]
    fn binary_sizes_like_docker() {
        assert_eq!(binary_size(0.0), "0B");
        assert_eq!(binary_size(512.0), "512B");
        assert_eq!(binary_size(1536.0), "1.5KiB");
        assert_eq!(binary_size(1_597_000.0), "1.523MiB");
        assert_eq!(binary_size(25.0 * 1024.0 * 1024.0 * 1024.0), "25GiB");
    }

    #[test]
    fn times_in_rfc3339() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_735_689_600_000_000_123),
            "2025-01-01T00:00:00.000000123Z"
        );
    }

    #[test]
    fn template_functions() {
        let v = serde_json::json!({
            "Config": {"Labels": {"a.b": "c"}, "Env": ["X=1", "Y=2"]},
            "status": "start",
            "timeNano": 5,
        });
        assert_eq!(render_template("{{index .Config.Labels \"a.b\"}}", &v), "c");
        assert_eq!(render_template("{{join .Config.Env \" \"}}", &v), "X=1 Y=2");
        assert_eq!(
            render_template("{{upper .Status}} {{.TimeNano}}", &v),
            "START 5"
        );
        assert_eq!(
            render_template("{{json .Config.Env}}", &v),
            r#"["X=1","Y=2"]"#
        );
    }

    #[test]
    fn templates() {
        let v = serde_json::json!({"ID": "abc", "Labels": {"a": "b"}, "Tags": ["x", "y"]});
        assert_eq!(render_template("{{.ID}}\\t{{.Labels.a}}", &v), "abc\tb");
        assert_eq!(render_template("{{json .Labels}}", &v), r#"{"a":"b"}"#);
        assert_eq!(render_template("{{.Tags}}", &v), "x,y");
        assert_eq!(render_template("{{.Missing}}!", &v), "!");
    }
}
