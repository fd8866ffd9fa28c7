//! The Go-template subset Docker users write in `--format`: fields
//! (`.A.B`, `$`, `$var.A`), the functions `json`, `index`, `join`, `len`,
//! `upper`, `lower`, `title`, `println`, and the blocks `if`/`else if`/
//! `else`, `range` (with `$k, $v :=`) and `with`, closed by `end`;
//! `{{-`/`-}}` trim the whitespace beside them.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    If,
    Range,
    With,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(String),
    Block {
        kind: Kind,
        vars: Vec<String>,
        expr: String,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End,
    Else,
    ElseIf(String),
}

fn tokenize(template: &str) -> Vec<(bool, String)> {
    let mut tokens: Vec<(bool, String)> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-') {
            trim_next = true;
            action = a;
        }
        tokens.push((false, text.to_string()));
        tokens.push((true, action.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    tokens.push((false, text.to_string()));
    tokens
}

fn parse_list(tokens: &[(bool, String)], pos: &mut usize) -> (Vec<Node>, Stop) {
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        let (is_action, text) = &tokens[*pos];
        *pos += 1;
        if !is_action {
            if !text.is_empty() {
                nodes.push(Node::Text(text.clone()));
            }
            continue;
        }
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let rest = rest.trim();
        match word {
            "end" => return (nodes, Stop::End),
            "else" if rest.is_empty() => return (nodes, Stop::Else),
            "else" => {
                let cond = rest.strip_prefix("if").map(str::trim).unwrap_or(rest);
                return (nodes, Stop::ElseIf(cond.to_string()));
            }
            "if" => nodes.push(parse_block(tokens, pos, Kind::If, rest)),
            "range" => nodes.push(parse_block(tokens, pos, Kind::Range, rest)),
            "with" => nodes.push(parse_block(tokens, pos, Kind::With, rest)),
            _ if text.starts_with("/*") => {}
            _ => nodes.push(Node::Action(text.clone())),
        }
    }
    (nodes, Stop::Eof)
}

fn parse_block(tokens: &[(bool, String)], pos: &mut usize, kind: Kind, head: &str) -> Node {
    let (vars, expr) = match head.split_once(":=") {
        Some((vars, expr)) => (
            vars.split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect(),
            expr.trim().to_string(),
        ),
        None => (Vec::new(), head.to_string()),
    };
    let (body, end) = parse_list(tokens, pos);
    let otherwise = match end {
        Stop::Else => parse_list(tokens, pos).0,
        Stop::ElseIf(cond) => vec![parse_block(tokens, pos, Kind::If, &cond)],
        Stop::End | Stop::Eof => Vec::new(),
    };
    Node::Block {
        kind,
        vars,
        expr,
        body,
        otherwise,
    }
}

struct Scope<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
}

/// Renders `template` against `value` (`\t` and `\n` written as escapes
/// become tab and newline, as the Docker CLI does).
pub fn render(template: &str, value: &Value) -> String {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let tokens = tokenize(&template);
    let mut pos = 0;
    let (nodes, _) = parse_list(&tokens, &mut pos);
    let mut scope = Scope {
        root: value,
        vars: Vec::new(),
    };
    let mut out = String::new();
    render_nodes(&nodes, value, &mut scope, &mut out);
    out
}

fn render_nodes(nodes: &[Node], dot: &Value, scope: &mut Scope, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(a) => out.push_str(&text_of(&eval(a, dot, scope))),
            Node::Block {
                kind,
                vars,
                expr,
                body,
                otherwise,
            } => {
                let value = eval(expr, dot, scope);
                let saved = scope.vars.len();
                match kind {
                    Kind::If if truthy(&value) => render_nodes(body, dot, scope, out),
                    Kind::With if truthy(&value) => render_nodes(body, &value, scope, out),
                    Kind::Range if truthy(&value) => {
                        let items: Vec<(Value, Value)> = match &value {
                            Value::Array(items) => items
                                .iter()
                                .enumerate()
                                .map(|(i, v)| (Value::from(i), v.clone()))
                                .collect(),
                            // Go ranges over a map in key order (serde_json's maps are sorted).
                            Value::Object(map) => map
                                .iter()
                                .map(|(k, v)| (Value::String(k.clone()), v.clone()))
                                .collect(),
                            other => vec![(Value::from(0), other.clone())],
                        };
                        for (key, item) in items {
                            scope.vars.truncate(saved);
                            match vars.as_slice() {
                                [v] => scope.vars.push((v.clone(), item.clone())),
                                [k, v, ..] => {
                                    scope.vars.push((k.clone(), key));
                                    scope.vars.push((v.clone(), item.clone()));
                                }
                                [] => {}
                            }
                            render_nodes(body, &item, scope, out);
                        }
                    }
                    _ => render_nodes(otherwise, dot, scope, out),
                }
                scope.vars.truncate(saved);
            }
        }
    }
}

/// Go's truth: false, 0, null and empty strings, arrays and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How an action's value prints: strings bare, arrays joined by commas
/// (as Berth's --format always has), other values as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A value as text: strings bare, everything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Evaluates an action: a function applied to operands, or one operand.
fn eval(action: &str, dot: &Value, scope: &Scope) -> Value {
    let words = split_words(action);
    let arg = |i: usize| {
        words
            .get(i)
            .map(|w| operand(w, dot, scope))
            .unwrap_or(Value::Null)
    };
    match words.first().copied() {
        Some("json") => Value::String(arg(1).to_string()),
        Some("upper") => Value::String(text_of(&arg(1)).to_uppercase()),
        Some("lower") => Value::String(text_of(&arg(1)).to_lowercase()),
        Some("title") => {
            let text = text_of(&arg(1));
            let mut chars = text.chars();
            Value::String(match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect(),
                None => String::new(),
            })
        }
        Some("println") => Value::String(format!("{}\n", text_of(&arg(1)))),
        Some("len") => Value::from(match arg(1) {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            Value::String(s) => s.len(),
            _ => 0,
        }),
        Some("join") => {
            let sep = text_of(&arg(2));
            Value::String(match arg(1) {
                Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(&sep),
                other => plain(&other),
            })
        }
        Some("index") => {
            let mut cur = arg(1);
            for i in 2..words.len() {
                let key = arg(i);
                cur = match (&cur, &key) {
                    (Value::Array(items), k) => k
                        .as_u64()
                        .or_else(|| k.as_str().and_then(|s| s.parse().ok()))
                        .and_then(|i| items.get(usize::try_from(i).ok()?).cloned())
                        .unwrap_or(Value::Null),
                    (Value::Object(map), k) => map.get(&plain(k)).cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
            cur
        }
        Some(_) => operand(action.trim(), dot, scope),
        None => Value::Null,
    }
}

/// One operand: `.`, `.A.B`, `$`, `$v.A`, a quoted string, a number or a
/// boolean.
fn operand(word: &str, dot: &Value, scope: &Scope) -> Value {
    if let Some(s) = word
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .or_else(|| word.strip_prefix('`').and_then(|w| w.strip_suffix('`')))
    {
        return Value::String(s.replace("\\\"", "\""));
    }
    if let Ok(n) = word.parse::<i64>() {
        return Value::from(n);
    }
    match word {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Some(var) = word.strip_prefix('$') {
        let (name, path) = match var.find('.') {
            Some(i) => (&var[..i], &var[i..]),
            None => (var, ""),
        };
        let base = if name.is_empty() {
            Some(scope.root.clone())
        } else {
            scope
                .vars
                .iter()
                .rev()
                .find(|(n, _)| n.strip_prefix('$') == Some(name))
                .map(|(_, v)| v.clone())
        };
        return match (base, path) {
            (Some(v), "") => v,
            (Some(v), p) => lookup(p, &v).cloned().unwrap_or(Value::Null),
            (None, _) => Value::Null,
        };
    }
    lookup(word, dot).cloned().unwrap_or(Value::Null)
}

/// Splits an action into words, keeping quoted strings whole.
fn split_words(action: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = action.trim();
    while !rest.is_empty() {
        let end = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.find('"').map(|i| i + 2).unwrap_or(rest.len())
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        words.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    words
}

/// `.A.B` in `value`; a field not found by its exact name is looked up
/// without regard to case (the API's `status`/`timeNano` are Docker's
/// template fields `.Status`/`.TimeNano`).
pub fn lookup<'a>(path: &str, value: &'a Value) -> Option<&'a Value> {
    if path == "." {
        return Some(value);
    }
    let mut cur = value;
    for part in path.trim_start_matches('.').split('.') {
        cur = match cur.get(part) {
            Some(v) => v,
            None => cur
                .as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(part))
                .map(|(_, v)| v)?,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_functions() {
        let v = json!({
            "ID": "abc",
            "Config": {"Labels": {"a.b": "c"}, "Env": ["X=1", "Y=2"]},
            "status": "start",
            "timeNano": 5,
            "Tags": ["x", "y"],
        });
        assert_eq!(render("{{.ID}}\\t{{.Config.Labels.a}}!", &v), "abc\t!");
        assert_eq!(render("{{index .Config.Labels \"a.b\"}}", &v), "c");
        assert_eq!(render("{{index .Tags 1}}", &v), "y");
        assert_eq!(render("{{join .Config.Env \" \"}}", &v), "X=1 Y=2");
        assert_eq!(render("{{upper .Status}} {{.TimeNano}}", &v), "START 5");
        assert_eq!(render("{{json .Config.Env}}", &v), r#"["X=1","Y=2"]"#);
        assert_eq!(render("{{len .Tags}} {{title .status}}", &v), "2 Start");
        assert_eq!(render("{{.Tags}}", &v), "x,y");
        assert_eq!(render("{{/* note */}}{{$.ID}}", &v), "abc");
    }

    #[test]
    fn blocks() {
        let v = json!({
            "Mounts": [{"Source": "/a", "Destination": "/x"}, {"Source": "/b", "Destination": "/y"}],
            "Labels": {"k1": "v1", "k2": "v2"},
            "State": {"Running": true, "Health": null},
            "Empty": [],
        });
        assert_eq!(
            render("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", &v),
            "/a:/x /b:/y "
        );
        assert_eq!(
            render("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", &v),
            "k1=v1;k2=v2;"
        );
        assert_eq!(
            render("{{if .State.Running}}up{{else}}down{{end}}", &v),
            "up"
        );
        assert_eq!(
            render(
                "{{if .State.Health}}h{{else if .Empty}}e{{else}}none{{end}}",
                &v
            ),
            "none"
        );
        assert_eq!(render("{{with .State}}{{.Running}}{{end}}", &v), "true");
        assert_eq!(render("{{range .Empty}}x{{else}}empty{{end}}", &v), "empty");
        assert_eq!(
            render("{{range .Mounts -}}\n  {{.Source}}\n{{- end}}", &v),
            "/a/b"
        );
    }
}
