//! YAML → JSON exactly as Kubernetes reads it.
//!
//! kubectl and the apiserver turn YAML into JSON with `sigs.k8s.io/yaml`, which uses go-yaml v2:
//! YAML 1.1 scalars (`yes`/`on`/`y` are booleans, `0755` is octal, `1_000` is 1000, `1e1` is a
//! float that JSON prints as `10`), non-string keys turned into strings, merge keys, and — with
//! the apiserver's strict field validation — duplicate keys rejected. This module reproduces that
//! reading on top of a maintained YAML 1.2 event parser (granit-parser, through serde-saphyr), so
//! a manifest means the same thing to `pgbaseline check` as to the cluster. Where the cluster's
//! reading is itself ambiguous (two keys that only become equal as JSON strings) or relies on a
//! tag nobody should use in a policy (`!!binary`, `!!timestamp`), the document is refused with a
//! reason instead.
//!
//! Every resource is bounded: documents nest at most [`MAX_DEPTH`] levels and expand to at most
//! [`MAX_NODES`] values after aliases, and parsing stops at the first syntax error.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Tag};

/// Most values one document may expand to (aliases included); a real policy has a few hundred.
pub const MAX_NODES: usize = 100_000;
/// Deepest nesting of collections; a policy nests about eight levels.
pub const MAX_DEPTH: usize = 64;

const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Where and why a YAML stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based document index (0 when the stream breaks before the first document).
    pub document: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, for a syntax error.
    pub column: Option<usize>,
    /// Field path of the mapping or value at fault, when the syntax was fine.
    pub path: Option<String>,
    pub reason: String,
}

/// One document of a stream, as JSON, with the source line of every field path.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based index in the stream.
    pub index: usize,
    /// `None` for an empty document (only comments, or `null`), which kubectl skips.
    pub value: Option<Value>,
    /// Field path (`spec.selector.engines[1]`) → 1-based line.
    pub lines: HashMap<String, usize>,
    /// YAML 1.1 readings a YAML 1.2 reader would not share (`yes` as true, `0755` as 493).
    pub notes: Vec<(usize, String)>,
}

impl Document {
    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// Reads every document of `text`. Stops at the first error: like kubectl, a stream with a
/// broken document is not applied in part.
pub fn documents(text: &str) -> Result<Vec<Document>, YamlError> {
    let options = serde_saphyr::granit_parser::options! {
        // go-yaml (a libyaml port) ends a block scalar at end of input without adding a newline.
        block_scalar_eof_without_line_feed: true,
        flow_nesting_limit: MAX_DEPTH,
        block_nesting_limit: MAX_DEPTH,
        emit_comments: false,
    };
    let mut parser = Parser::new_from_str_with_options(text, options);
    let mut out = Vec::new();
    let mut builder: Option<Builder> = None;
    let mut index = 0;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(YamlError {
                    document: index,
                    line: e.marker().line(),
                    column: Some(e.marker().col() + 1),
                    path: None,
                    reason: e.info(),
                });
            }
        };
        let line = span.start.line();
        let at = |reason: String| YamlError {
            document: index,
            line,
            column: Some(span.start.col() + 1),
            path: None,
            reason,
        };
        match event {
            Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_, version) => {
                index += 1;
                // go-yaml v2 reads YAML 1.1 only and refuses any other %YAML directive.
                if let Some(v) = version.filter(|v| (v.major, v.minor) != (1, 1)) {
                    return Err(YamlError {
                        document: index,
                        line,
                        column: Some(1),
                        path: None,
                        reason: format!(
                            "found incompatible YAML document: %YAML {}.{} (Kubernetes reads YAML 1.1; drop the directive)",
                            v.major, v.minor
                        ),
                    });
                }
                builder = Some(Builder::default());
            }
            Event::DocumentEnd => {
                let root = builder.take().and_then(|b| b.root);
                let mut doc = Document {
                    index,
                    value: None,
                    lines: HashMap::new(),
                    notes: Vec::new(),
                };
                if let Some(root) = root {
                    let mut conv = Converter {
                        budget: MAX_NODES,
                        doc: &mut doc,
                    };
                    let value = conv.value(&root, "", 0).map_err(|e| YamlError {
                        document: index,
                        line: e.line,
                        column: None,
                        path: Some(e.path),
                        reason: e.reason,
                    })?;
                    doc.value = (!value.is_null()).then_some(value);
                }
                out.push(doc);
            }
            event => {
                let Some(b) = builder.as_mut() else {
                    return Err(at("YAML content outside a document".into()));
                };
                b.event(event, line).map_err(at)?;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Events → a tree of nodes (aliases shared, not copied).

#[derive(Debug)]
enum Node {
    Scalar {
        text: String,
        plain: bool,
        tag: Option<String>,
        line: usize,
    },
    Seq {
        items: Vec<Rc<Node>>,
        line: usize,
    },
    Map {
        entries: Vec<(Rc<Node>, Rc<Node>)>,
        line: usize,
    },
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } => *line,
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Rc<Node>>,
        anchor: usize,
        line: usize,
    },
    Map {
        entries: Vec<(Rc<Node>, Rc<Node>)>,
        key: Option<Rc<Node>>,
        anchor: usize,
        line: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Rc<Node>>,
    root: Option<Rc<Node>>,
    events: usize,
}

fn tag_name(tag: &Tag) -> String {
    format!("{}{}", tag.handle(), tag.suffix())
}

impl Builder {
    fn event(&mut self, event: Event<'_>, line: usize) -> Result<(), String> {
        self.events += 1;
        if self.events > MAX_NODES {
            return Err(format!("document has more than {MAX_NODES} nodes"));
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let node = Rc::new(Node::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    tag: tag.map(|t| tag_name(&t)),
                    line,
                });
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => self.push(node.clone()),
                None => Err("alias refers to a node that contains it".into()),
            },
            Event::SequenceStart(_, anchor, _) => {
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    line,
                });
                Ok(())
            }
            Event::MappingStart(_, anchor, _) => {
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    anchor,
                    line,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        anchor,
                        line,
                    }) => (Node::Seq { items, line }, anchor),
                    Some(Frame::Map {
                        entries,
                        anchor,
                        line,
                        ..
                    }) => (Node::Map { entries, line }, anchor),
                    None => return Err("unbalanced collection end".into()),
                };
                let node = Rc::new(node);
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            // Comments, anchor metadata and the like carry no data.
            _ => Ok(()),
        }
    }

    fn push(&mut self, node: Rc<Node>) -> Result<(), String> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map { entries, key, .. }) => {
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars, resolved as go-yaml v2 resolves them.

/// A scalar after YAML 1.1 resolution (go-yaml v2's `resolve`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn tag(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "bool",
            Scalar::Int(_) | Scalar::Uint(_) => "int",
            Scalar::Float(_) => "float",
            Scalar::Str(_) => "str",
        }
    }
}

/// Resolves one scalar: `plain` is false for quoted and block scalars; `tag` is the resolved tag
/// (`tag:yaml.org,2002:int`, `!local`), if any.
pub(crate) fn resolve(text: &str, plain: bool, tag: Option<&str>) -> Result<Scalar, String> {
    let tag = match tag {
        None if !plain => return Ok(Scalar::Str(text.to_string())),
        None => "",
        Some(t) => t,
    };
    let core = tag.strip_prefix(CORE_TAG_PREFIX);
    let wanted = match (tag, core) {
        ("", _) => "",
        (_, Some(c @ ("str" | "int" | "float" | "bool" | "null"))) => c,
        (_, Some(c @ ("binary" | "timestamp"))) => {
            return Err(format!(
                "the YAML tag !!{c} is not supported in a policy; write the value as a plain string"
            ));
        }
        // Any other tag (local `!foo`, `!!seq` on a scalar, …) leaves the text a string, as
        // go-yaml does.
        _ => return Ok(Scalar::Str(text.to_string())),
    };
    if wanted == "str" {
        return Ok(Scalar::Str(text.to_string()));
    }
    let resolved = resolve_implicit(text);
    match (wanted, &resolved) {
        ("", _) => Ok(resolved),
        (w, r) if w == r.tag() => Ok(resolved),
        ("float", Scalar::Int(i)) => Ok(Scalar::Float(*i as f64)),
        ("float", Scalar::Uint(u)) => Ok(Scalar::Float(*u as f64)),
        (w, r) => Err(format!("cannot decode !!{} `{text}` as a !!{w}", r.tag())),
    }
}

/// go-yaml v2's resolution of an untagged plain scalar (YAML 1.1 types).
fn resolve_implicit(text: &str) -> Scalar {
    let str_ = || Scalar::Str(text.to_string());
    let hint = match text.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return str_(),
    };
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Scalar::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Scalar::Bool(false);
        }
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match hint {
        b'.' => go_parse_float(text).map_or_else(str_, Scalar::Float),
        b'D' | b'S' => {
            let plain: String = text.chars().filter(|c| *c != '_').collect();
            if let Some(i) = go_parse_int(&plain) {
                return Scalar::Int(i);
            }
            if let Some(u) = go_parse_uint(&plain) {
                return Scalar::Uint(u);
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = finite(plain.parse::<f64>().ok())
            {
                return Scalar::Float(f);
            }
            str_()
        }
        _ => str_(),
    }
}

fn finite(f: Option<f64>) -> Option<f64> {
    f.filter(|f| f.is_finite())
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseUint(s, 0, 64)` (after go-yaml removed underscores).
fn go_parse_uint(s: &str) -> Option<u64> {
    let (radix, digits) = match s.as_bytes() {
        [] => return None,
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'b') => (2, &s[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'o') => (8, &s[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'x') => (16, &s[2..]),
        [b'0', ..] => (8, &s[1..]),
        _ => (10, s),
    };
    if digits.is_empty() {
        // "0" alone is octal zero; a bare prefix is not a number.
        return (s == "0").then_some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(rest)?;
    if negative {
        if magnitude <= i64::MAX as u64 {
            Some(-(magnitude as i64))
        } else if magnitude == i64::MAX as u64 + 1 {
            Some(i64::MIN)
        } else {
            None
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseFloat(s, 64)` for a scalar starting with `.` (underscores only between
/// digits; out of range is an error, not infinity).
fn go_parse_float(s: &str) -> Option<f64> {
    if s.contains('_') {
        if !go_underscore_ok(s) {
            return None;
        }
        let plain: String = s.chars().filter(|c| *c != '_').collect();
        return finite(plain.parse::<f64>().ok());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    finite(s.parse::<f64>().ok())
}

/// Go's `underscoreOK`: underscores only between digits.
fn go_underscore_ok(s: &str) -> bool {
    let mut saw = b'^';
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    for c in s.bytes() {
        if c.is_ascii_digit() {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// A YAML 1.2 reader (and a person) would read this plain scalar differently from Kubernetes.
fn yaml11_note(text: &str, scalar: &Scalar) -> Option<String> {
    match scalar {
        Scalar::Bool(b)
            if !matches!(text, "true" | "True" | "TRUE" | "false" | "False" | "FALSE") =>
        {
            Some(format!(
                "`{text}` is read as {b} (YAML 1.1, as kubectl and the apiserver read it); write {b}, or quote it for a string"
            ))
        }
        Scalar::Int(i)
            if text.len() > 1
                && text.starts_with('0')
                && text.bytes().all(|c| c.is_ascii_digit()) =>
        {
            Some(format!(
                "`{text}` is read as the octal number {i} (YAML 1.1, as kubectl and the apiserver read it); write {i}, or quote it for a string"
            ))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes → JSON, as sigs.k8s.io/yaml converts go-yaml's values.

struct ConvError {
    line: usize,
    path: String,
    reason: String,
}

struct Converter<'d> {
    budget: usize,
    doc: &'d mut Document,
}

/// A key as go-yaml compares keys for duplicates (typed: `1`, `"1"` and `1.0` differ).
#[derive(PartialEq, Eq, Hash)]
enum KeyId {
    Bool(bool),
    Int(i64),
    Float(u64),
    Nan(usize),
    Str(String),
}

impl Converter<'_> {
    fn spend(&mut self, line: usize) -> Result<(), ConvError> {
        if self.budget == 0 {
            return Err(ConvError {
                line,
                path: String::new(),
                reason: format!(
                    "document expands to more than {MAX_NODES} values (aliases included)"
                ),
            });
        }
        self.budget -= 1;
        Ok(())
    }

    fn value(&mut self, node: &Node, path: &str, depth: usize) -> Result<Value, ConvError> {
        let line = node.line();
        self.spend(line)?;
        if depth > MAX_DEPTH {
            return Err(ConvError {
                line,
                path: path.to_string(),
                reason: format!("nested more than {MAX_DEPTH} levels"),
            });
        }
        self.doc.lines.entry(path.to_string()).or_insert(line);
        match node {
            Node::Scalar {
                text, plain, tag, ..
            } => {
                let at = |reason| ConvError {
                    line,
                    path: path.to_string(),
                    reason,
                };
                let scalar = resolve(text, *plain, tag.as_deref()).map_err(at)?;
                if *plain
                    && tag.is_none()
                    && let Some(note) = yaml11_note(text, &scalar)
                {
                    self.doc.notes.push((line, note));
                }
                scalar_to_json(scalar).map_err(at)
            }
            Node::Seq { items, .. } => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.value(item, &format!("{path}[{i}]"), depth + 1)?);
                }
                Ok(Value::Array(out))
            }
            Node::Map { .. } => {
                let mut entries = Vec::new();
                self.collect_entries(node, path, depth, &mut entries, &mut 0)?;
                let mut map = Map::new();
                let mut seen: HashSet<KeyId> = HashSet::new();
                for (id, key, value, key_line) in entries {
                    let key_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if !seen.insert(id) {
                        return Err(ConvError {
                            line: key_line,
                            path: key_path,
                            reason: "duplicate key: the field is given twice".into(),
                        });
                    }
                    if map.contains_key(&key) {
                        return Err(ConvError {
                            line: key_line,
                            path: key_path,
                            reason: format!(
                                "two keys of this mapping both read as {key:?} (for example 1 and \"1\", or on and true); Kubernetes would keep either one at random — write each key once"
                            ),
                        });
                    }
                    map.insert(key, value);
                }
                Ok(Value::Object(map))
            }
        }
    }

    /// The entries of a mapping with its merge keys (`<<`) expanded.
    #[allow(clippy::type_complexity)]
    fn collect_entries(
        &mut self,
        node: &Node,
        path: &str,
        depth: usize,
        out: &mut Vec<(KeyId, String, Value, usize)>,
        nans: &mut usize,
    ) -> Result<(), ConvError> {
        let Node::Map { entries, .. } = node else {
            return Err(ConvError {
                line: node.line(),
                path: path.to_string(),
                reason: "map merge requires map or sequence of maps as the value".into(),
            });
        };
        for (key, value) in entries {
            let key_line = key.line();
            let Node::Scalar {
                text, plain, tag, ..
            } = key.as_ref()
            else {
                return Err(ConvError {
                    line: key_line,
                    path: path.to_string(),
                    reason: "a mapping key must be a scalar, not a list or a mapping".into(),
                });
            };
            // go-yaml's isMerge: a plain untagged `<<`, or one tagged !!merge.
            let is_merge = text == "<<"
                && ((*plain && tag.is_none()) || tag.as_deref() == Some("tag:yaml.org,2002:merge"));
            if is_merge {
                self.spend(key_line)?;
                match value.as_ref() {
                    Node::Seq { items, .. } => {
                        for item in items {
                            self.collect_entries(item, path, depth, out, nans)?;
                        }
                    }
                    other => self.collect_entries(other, path, depth, out, nans)?,
                }
                continue;
            }
            let at = |reason| ConvError {
                line: key_line,
                path: path.to_string(),
                reason,
            };
            let scalar = resolve(text, *plain, tag.as_deref()).map_err(at)?;
            let (id, name) = key_to_string(scalar, nans).map_err(at)?;
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            self.doc.lines.entry(child.clone()).or_insert(key_line);
            let value = self.value(value, &child, depth + 1)?;
            out.push((id, name, value, key_line));
        }
        Ok(())
    }
}

fn scalar_to_json(scalar: Scalar) -> Result<Value, String> {
    Ok(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Int(i) => Value::from(i),
        Scalar::Uint(u) => Value::from(u),
        Scalar::Float(f) => float_to_json(f)?,
        Scalar::Str(s) => Value::String(s),
    })
}

/// A float as Go's `encoding/json` writes it and the apiserver reads it back: an integral value
/// below 1e21 is written without a fraction and read as an integer.
fn float_to_json(f: f64) -> Result<Value, String> {
    if !f.is_finite() {
        return Err(format!(
            "{} cannot be written as JSON, so Kubernetes rejects it",
            if f.is_nan() { ".nan" } else { ".inf" }
        ));
    }
    if f.fract() == 0.0 && f.abs() < 1e21 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        return Ok(Value::from(f as i64));
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{f} cannot be written as JSON"))
}

/// A key as sigs.k8s.io/yaml turns it into a JSON object key.
fn key_to_string(scalar: Scalar, nans: &mut usize) -> Result<(KeyId, String), String> {
    Ok(match scalar {
        Scalar::Str(s) => (KeyId::Str(s.clone()), s),
        Scalar::Bool(b) => (KeyId::Bool(b), b.to_string()),
        Scalar::Int(i) => (KeyId::Int(i), i.to_string()),
        Scalar::Float(f) => {
            let id = if f.is_nan() {
                *nans += 1;
                KeyId::Nan(*nans)
            } else {
                KeyId::Float((f + 0.0).to_bits())
            };
            (id, go_format_g32(f))
        }
        Scalar::Null => return Err("a mapping key cannot be null".into()),
        Scalar::Uint(u) => {
            return Err(format!(
                "the mapping key {u} is too large (Kubernetes rejects unsigned 64-bit keys)"
            ));
        }
    })
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)` with go-yaml's names for the non-finite values.
fn go_format_g32(f: f64) -> String {
    let x = f as f32;
    if x.is_nan() {
        return ".nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    // Shortest digits that round-trip as f32, e.g. "1.234567e6".
    let sci = format!("{x:e}");
    let (negative, sci) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, sci),
    };
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if digits.chars().all(|c| c == '0') {
        out.push('0');
        return out;
    }
    let nd = digits.len() as i32;
    if !(-4..6).contains(&exponent) {
        // %e with nd-1 fraction digits and an exponent of at least two digits.
        out.push_str(&digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.abs()));
    } else {
        // %f with as many fraction digits as needed.
        let dp = exponent + 1;
        if dp > 0 {
            for i in 0..dp {
                out.push(
                    digits
                        .as_bytes()
                        .get(i as usize)
                        .map_or('0', |b| *b as char),
                );
            }
        } else {
            out.push('0');
        }
        let frac = (nd - dp).max(0);
        if frac > 0 {
            out.push('.');
            for i in 0..frac {
                let at = dp + i;
                out.push(if at < 0 {
                    '0'
                } else {
                    digits
                        .as_bytes()
                        .get(at as usize)
                        .map_or('0', |b| *b as char)
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let docs = documents(text).expect("valid yaml");
        docs[0].value.clone().expect("not empty")
    }

    #[test]
    fn yaml_1_1_scalars_read_as_go_yaml_v2_reads_them() {
        let cases: &[(&str, Value)] = &[
            ("yes", json!(true)),
            ("Yes", json!(true)),
            ("on", json!(true)),
            ("ON", json!(true)),
            ("y", json!(true)),
            ("n", json!(false)),
            ("off", json!(false)),
            ("yES", json!("yES")),
            ("True", json!(true)),
            ("0755", json!(493)),
            ("08", json!(8)),
            ("0x1F", json!(31)),
            ("0o17", json!(15)),
            ("0b101", json!(5)),
            ("-0b101", json!(-5)),
            ("1_000", json!(1000)),
            ("+12", json!(12)),
            ("1e1", json!(10)),
            ("1440.0", json!(1440)),
            ("1.", json!(1)),
            (".5", json!(0.5)),
            ("+.5", json!(0.5)),
            ("-0.0", json!(0)),
            ("1e400", json!("1e400")),
            ("~", json!(null)),
            ("Null", json!(null)),
            ("NaN", json!("NaN")),
            ("0x", json!("0x")),
            ("2001-12-14", json!("2001-12-14")),
            ("18446744073709551615", json!(18446744073709551615u64)),
            ("'yes'", json!("yes")),
            ("\"0755\"", json!("0755")),
            ("!!str 0755", json!("0755")),
            ("!!int '12'", json!(12)),
            ("!!float 10", json!(10)),
            ("!custom 12", json!("12")),
            ("|\n  text", json!("text\n")),
        ];
        for (text, want) in cases {
            let got = one(&format!("v: {text}\n"));
            assert_eq!(&got["v"], want, "{text}");
        }
    }

    #[test]
    fn keys_become_strings_as_sigs_yaml_writes_them() {
        let v = one("{1: a, 1.5: b, true: c, 0x10: d, 1e1: e, 123456789.0: f}");
        assert_eq!(
            v,
            json!({"1": "a", "1.5": "b", "true": "c", "16": "d", "10": "e", "1.2345679e+08": "f"})
        );
    }

    #[test]
    fn duplicates_non_finite_and_bad_tags_are_refused_with_a_line() {
        for (text, line, reason) in [
            ("a: 1\nb: 2\na: 3\n", 3, "given twice"),
            ("a:\n  on: 1\n  true: 2\n", 3, "given twice"),
            ("a:\n  1: x\n  \"1\": y\n", 3, "both read as"),
            ("a: .inf\n", 1, "JSON"),
            ("a: !!int x\n", 1, "cannot decode"),
            ("a: !!binary aGk=\n", 1, "!!binary"),
            ("? [a]\n: b\n", 1, "scalar"),
            ("~: a\n", 1, "null"),
        ] {
            let err = documents(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err:?}");
            assert!(err.reason.contains(reason), "{text}: {err:?}");
        }
    }

    #[test]
    fn merge_keys_and_aliases_expand_and_overlaps_are_duplicates() {
        let v = one("base: &b {a: 1}\nc:\n  <<: *b\n  b: 2\n  y: 3\n");
        // `y` is a YAML 1.1 boolean, so the key is "true".
        assert_eq!(v["c"], json!({"a": 1, "b": 2, "true": 3}));
        let err = documents("base: &b {a: 1}\nc:\n  <<: *b\n  a: 2\n").expect_err("overlap");
        assert!(err.reason.contains("twice"), "{err:?}");
        assert_eq!(err.path.as_deref(), Some("c.a"));
        assert_eq!(one("'<<': 1\n"), json!({"<<": 1}));
    }

    #[test]
    fn syntax_errors_stop_at_once_with_line_and_column() {
        let err = documents("a: 1\nb: \"unclosed\nc: 2\n").expect_err("unclosed quote");
        assert!(err.line >= 2, "{err:?}");
        assert!(!err.reason.is_empty());
        let err = documents("a:\n\tb: 1\n").expect_err("tab");
        assert_eq!(err.line, 2, "{err:?}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_bounded() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = documents(&bomb).expect_err("bomb");
        assert!(err.reason.contains("expands"), "{err:?}");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(documents(&deep).is_err());
    }

    #[test]
    fn empty_documents_are_kept_as_none_and_counted() {
        let docs = documents("# only a comment\n---\na: 1\n---\n---\nnull\n").expect("ok");
        let values: Vec<_> = docs.iter().map(|d| d.value.is_some()).collect();
        assert_eq!(values.iter().filter(|v| **v).count(), 1);
        let a = docs.iter().find(|d| d.value.is_some()).expect("doc");
        assert_eq!(a.line_of("a"), Some(3));
    }

    #[test]
    fn go_float_formatting_matches_strconv() {
        for (f, s) in [
            (0.0, "0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(go_format_g32(f), s, "{f}");
        }
    }
}
