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

/// A small Go-template subset: literal text, `{{.Field}}` (dotted paths),
/// `{{json .}}` / `{{json .Field}}`, `\t` and `\n` escapes. A leading
/// `table ` prints a header of the field names first.
pub fn render_template(template: &str, value: &Value) -> String {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let action = after[..end].trim();
        out.push_str(&eval_action(action, value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn eval_action(action: &str, value: &Value) -> String {
    if let Some(arg) = action.strip_prefix("json ") {
        return lookup(arg.trim(), value)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "null".into());
    }
    match lookup(action, value) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(v) => v.to_string(),
    }
}

fn lookup<'a>(path: &str, value: &'a Value) -> Option<&'a Value> {
    if path == "." {
        return Some(value);
    }
    let mut cur = value;
    for part in path.trim_start_matches('.').split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
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
    fn templates() {
        let v = serde_json::json!({"ID": "abc", "Labels": {"a": "b"}, "Tags": ["x", "y"]});
        assert_eq!(render_template("{{.ID}}\\t{{.Labels.a}}", &v), "abc\tb");
        assert_eq!(render_template("{{json .Labels}}", &v), r#"{"a":"b"}"#);
        assert_eq!(render_template("{{.Tags}}", &v), "x,y");
        assert_eq!(render_template("{{.Missing}}!", &v), "!");
    }
}
