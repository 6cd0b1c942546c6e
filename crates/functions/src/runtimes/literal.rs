//! The call of a Python, JavaScript or Lua function: `name(args…)` or
//! `module.name(args…)`, whose arguments are literals only, spelled as the language spells
//! them. Parsed here, before anything is fetched, into a language-neutral [`Value`] that
//! the runner in the jail receives as JSON data: nothing of the call is ever source code
//! to an interpreter, so no expression, name, call or comment can get in.
//!
//! One hand-written lexer and parser serve the three dialects (no crate parses "the
//! literal subset of Python, JavaScript and Lua" into one value type; full parsers such as
//! rustpython's or swc's would accept far more than we must refuse). The lexer turns the
//! text into tokens with the dialect's number and string rules (and its escapes); the
//! parser accepts exactly one call with literal arguments.

use crate::call::CallError;

/// Deepest nesting of lists and maps accepted.
const MAX_DEPTH: usize = 64;

/// The language whose spelling a call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Python,
    JavaScript,
    Lua,
}

/// A literal argument, in no language in particular.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    /// JavaScript's `undefined` (an argument of its own only).
    Undefined,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// In the order written (a dict's order is visible to the function).
    Map(Vec<(String, Value)>),
}

impl Value {
    /// Compact JSON; `Undefined` (only ever an argument) as `null`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null | Value::Undefined => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(f) => {
                // Always with a point or an exponent, so the runner keeps it a float.
                let text = serde_json::to_string(f).unwrap_or_else(|_| "null".into());
                out.push_str(&text);
                if !text.contains(['.', 'e', 'E']) {
                    out.push_str(".0");
                }
            }
            Value::Str(s) => out.push_str(&serde_json::to_string(s).expect("strings serialize")),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).expect("strings serialize"));
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

/// A parsed call.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptCall {
    /// `module` of `module.name(…)` (dotted for Python), if given.
    pub module: Option<String>,
    pub name: String,
    pub args: Vec<Value>,
}

impl ScriptCall {
    /// The module as the runner's argv names it: a JSON string, or `null` for a bare name.
    /// A pre-started runner has imported it before its call arrives.
    pub fn module_json(&self) -> String {
        match &self.module {
            Some(m) => serde_json::to_string(m).expect("strings serialize"),
            None => "null".to_owned(),
        }
    }

    /// What the runner reads: `{"module":…,"name":…,"args":[…],"undefined":[…]}`. Also
    /// the call's normal form in cache keys.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"module\":");
        out.push_str(&self.module_json());
        out.push_str(",\"name\":");
        out.push_str(&serde_json::to_string(&self.name).expect("strings serialize"));
        out.push_str(",\"args\":");
        Value::List(self.args.clone()).write_json(&mut out);
        let undefined: Vec<String> = self
            .args
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Value::Undefined))
            .map(|(i, _)| i.to_string())
            .collect();
        out.push_str(",\"undefined\":[");
        out.push_str(&undefined.join(","));
        out.push_str("]}");
        out
    }
}

fn err<T>(message: impl Into<String>, at: usize) -> Result<T, CallError> {
    Err(CallError { message: message.into(), at: Some(at) })
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// One of `( ) [ ] { } , ; : = . + -`.
    Punct(char),
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    dialect: Dialect,
}

fn is_name_start(c: char, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Lua => c.is_ascii_alphabetic() || c == '_',
        Dialect::JavaScript => c.is_alphabetic() || c == '_' || c == '$',
        Dialect::Python => c.is_alphabetic() || c == '_',
    }
}

fn is_name_char(c: char, dialect: Dialect) -> bool {
    is_name_start(c, dialect) || c.is_ascii_digit() || (dialect != Dialect::Lua && c.is_alphanumeric())
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn tokens(mut self) -> Result<Vec<(Tok, usize)>, CallError> {
        let mut out = Vec::new();
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            }
            let at = self.pos;
            let Some(c) = self.peek() else { return Ok(out) };
            let comment = match self.dialect {
                Dialect::Python => c == '#',
                Dialect::JavaScript => c == '/' && matches!(self.peek_at(1), Some('/' | '*')),
                Dialect::Lua => c == '-' && self.peek_at(1) == Some('-'),
            };
            if comment {
                return err("comments are not allowed in a call", at);
            }
            let tok = if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
                self.number(at)?
            } else if c == '"' || c == '\'' || (c == '`' && self.dialect == Dialect::JavaScript) {
                Tok::Str(self.string(at)?)
            } else if c == '[' && self.dialect == Dialect::Lua && matches!(self.peek_at(1), Some('[' | '=')) {
                match self.long_bracket(at)? {
                    Some(s) => Tok::Str(s),
                    None => {
                        self.bump();
                        Tok::Punct('[')
                    }
                }
            } else if is_name_start(c, self.dialect) {
                let start = self.pos;
                while self.peek().is_some_and(|c| is_name_char(c, self.dialect)) {
                    self.bump();
                }
                let name = &self.src[start..self.pos];
                // Python's string prefixes: raw and unicode strings are literals, bytes
                // and f-strings are not.
                if self.dialect == Dialect::Python && matches!(self.peek(), Some('"' | '\'')) {
                    match name.to_ascii_lowercase().as_str() {
                        "r" => Tok::Str(self.python_string(at, true)?),
                        "u" => Tok::Str(self.python_string(at, false)?),
                        _ => return err(format!("{name}-prefixed strings are not literals this call accepts"), at),
                    }
                } else {
                    Tok::Name(name.to_owned())
                }
            } else if "()[]{},;:=.+-".contains(c) {
                self.bump();
                Tok::Punct(c)
            } else {
                return err(format!("unexpected {c:?}: only a call with literal arguments is accepted"), at);
            };
            out.push((tok, at));
        }
    }

    /// A number: decimal, hexadecimal, octal and binary integers, and decimal floats, as
    /// the dialect writes them.
    fn number(&mut self, at: usize) -> Result<Tok, CallError> {
        let d = self.dialect;
        let start = self.pos;
        let radix = match (self.peek(), self.peek_at(1).map(|c| c.to_ascii_lowercase())) {
            (Some('0'), Some('x')) => 16,
            (Some('0'), Some('o')) if d != Dialect::Lua => 8,
            (Some('0'), Some('b')) if d != Dialect::Lua => 2,
            _ => 10,
        };
        let mut text = String::new();
        let mut is_float = false;
        if radix != 10 {
            self.bump();
            self.bump();
            while let Some(c) = self.peek() {
                if c.is_digit(radix) {
                    text.push(c);
                } else if c == '_' && d != Dialect::Lua {
                } else {
                    break;
                }
                self.bump();
            }
        } else {
            let mut seen_exp = false;
            while let Some(c) = self.peek() {
                if c.is_ascii_digit() {
                    text.push(c);
                } else if c == '_' && d != Dialect::Lua {
                } else if c == '.' && !is_float && !seen_exp {
                    is_float = true;
                    text.push(c);
                } else if (c == 'e' || c == 'E') && !seen_exp {
                    seen_exp = true;
                    is_float = true;
                    text.push('e');
                    self.bump();
                    if let Some(sign @ ('+' | '-')) = self.peek() {
                        text.push(sign);
                        self.bump();
                    }
                    continue;
                } else {
                    break;
                }
                self.bump();
            }
        }
        if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            let what = match self.peek() {
                Some('j' | 'J') if d == Dialect::Python => "complex numbers are not accepted".to_owned(),
                Some('n') if d == Dialect::JavaScript => "BigInt literals are not accepted".to_owned(),
                _ => format!("malformed number {:?}", &self.src[start..=self.pos]),
            };
            return err(what, at);
        }
        if text.is_empty() || text.ends_with(['e', '+', '-']) {
            return err(format!("malformed number {:?}", &self.src[start..self.pos]), at);
        }
        // Python 3 refuses `017`; JavaScript's legacy octal is not accepted either.
        if radix == 10 && !is_float && text.len() > 1 && text.starts_with('0') && d != Dialect::Lua {
            return err(
                format!("malformed number {:?}: leading zeros are not allowed", &self.src[start..self.pos]),
                at,
            );
        }
        if is_float {
            let value: f64 = text.parse().map_err(|_| CallError {
                message: format!("malformed number {:?}", &self.src[start..self.pos]),
                at: Some(at),
            })?;
            if !value.is_finite() {
                return err("the number is too large for a float", at);
            }
            return Ok(Tok::Float(value));
        }
        match i64::from_str_radix(&text, radix) {
            Ok(value) => Ok(Tok::Int(value)),
            // JavaScript's numbers are doubles anyway.
            Err(_) if d == Dialect::JavaScript && radix == 10 => Ok(Tok::Float(text.parse().unwrap_or(f64::MAX))),
            Err(_) => err("integers beyond 64 bits are not accepted", at),
        }
    }

    fn string(&mut self, at: usize) -> Result<String, CallError> {
        match self.dialect {
            Dialect::Python => self.python_string(at, false),
            Dialect::JavaScript => self.js_string(at),
            Dialect::Lua => self.lua_string(at),
        }
    }

    fn python_string(&mut self, at: usize, raw: bool) -> Result<String, CallError> {
        let quote = self.bump().expect("at a quote");
        let triple = self.peek() == Some(quote) && self.peek_at(1) == Some(quote);
        if triple {
            self.bump();
            self.bump();
        }
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else { return err("unterminated string", at) };
            if c == quote {
                if !triple {
                    return Ok(out);
                }
                if self.peek() == Some(quote) && self.peek_at(1) == Some(quote) {
                    self.bump();
                    self.bump();
                    return Ok(out);
                }
                out.push(c);
            } else if c == '\n' && !triple {
                return err("unterminated string", at);
            } else if c == '\\' {
                let Some(e) = self.bump() else { return err("unterminated string", at) };
                if raw {
                    out.push('\\');
                    out.push(e);
                    continue;
                }
                match e {
                    '\n' => {}
                    '\\' | '\'' | '"' => out.push(e),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    '0'..='7' => {
                        let mut value = e.to_digit(8).expect("octal");
                        for _ in 0..2 {
                            match self.peek().and_then(|c| c.to_digit(8)) {
                                Some(d) => {
                                    value = value * 8 + d;
                                    self.bump();
                                }
                                None => break,
                            }
                        }
                        out.push(char::from_u32(value).expect("below 512"));
                    }
                    'x' => out.push(self.hex_escape(2, at)?),
                    'u' => out.push(self.hex_escape(4, at)?),
                    'U' => out.push(self.hex_escape(8, at)?),
                    'N' => return err("\\N{…} escapes are not accepted; write the character", at),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            } else {
                out.push(c);
            }
        }
    }

    fn js_string(&mut self, at: usize) -> Result<String, CallError> {
        let quote = self.bump().expect("at a quote");
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else { return err("unterminated string", at) };
            if c == quote {
                return Ok(out);
            } else if quote == '`' && c == '$' && self.peek() == Some('{') {
                return err("template substitutions are not literals", at);
            } else if (c == '\n' || c == '\r') && quote != '`' {
                return err("unterminated string", at);
            } else if c == '\\' {
                let Some(e) = self.bump() else { return err("unterminated string", at) };
                match e {
                    '\n' | '\u{2028}' | '\u{2029}' => {}
                    '\r' => {
                        if self.peek() == Some('\n') {
                            self.bump();
                        }
                    }
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    '0' if !self.peek().is_some_and(|c| c.is_ascii_digit()) => out.push('\0'),
                    '1'..='9' | '0' => return err("octal escapes are not accepted in JavaScript strings", at),
                    'x' => out.push(self.hex_escape(2, at)?),
                    'u' if self.peek() == Some('{') => out.push(self.braced_escape(at)?),
                    'u' => {
                        let first = self.hex_value(4, at)?;
                        // A surrogate pair spelled as two escapes.
                        if (0xD800..0xDC00).contains(&first)
                            && self.peek() == Some('\\')
                            && self.peek_at(1) == Some('u')
                        {
                            self.bump();
                            self.bump();
                            let second = self.hex_value(4, at)?;
                            let combined = 0x10000 + ((first - 0xD800) << 10) + (second.wrapping_sub(0xDC00) & 0x3FF);
                            match char::from_u32(combined) {
                                Some(c) if (0xDC00..0xE000).contains(&second) => out.push(c),
                                _ => return err("unpaired surrogate in a string", at),
                            }
                        } else {
                            let c = char::from_u32(first)
                                .ok_or(CallError { message: "unpaired surrogate in a string".into(), at: Some(at) })?;
                            out.push(c);
                        }
                    }
                    other => out.push(other),
                }
            } else {
                out.push(c);
            }
        }
    }

    fn lua_string(&mut self, at: usize) -> Result<String, CallError> {
        let quote = self.bump().expect("at a quote");
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else { return err("unterminated string", at) };
            if c == quote {
                return Ok(out);
            } else if c == '\n' {
                return err("unterminated string", at);
            } else if c == '\\' {
                let Some(e) = self.bump() else { return err("unterminated string", at) };
                match e {
                    '\n' => out.push('\n'),
                    '\\' | '\'' | '"' => out.push(e),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    'z' => {
                        while self.peek().is_some_and(char::is_whitespace) {
                            self.bump();
                        }
                    }
                    '0'..='9' => {
                        let mut value = e.to_digit(10).expect("digit");
                        for _ in 0..2 {
                            match self.peek().and_then(|c| c.to_digit(10)) {
                                Some(d) => {
                                    value = value * 10 + d;
                                    self.bump();
                                }
                                None => break,
                            }
                        }
                        // Lua strings are bytes; ours are text: only ASCII by number.
                        if value > 127 {
                            return err("\\ddd escapes above 127 are not accepted; write the character", at);
                        }
                        out.push(char::from_u32(value).expect("ASCII"));
                    }
                    'x' => {
                        let c = self.hex_escape(2, at)?;
                        if !c.is_ascii() {
                            return err("\\x escapes above 7F are not accepted; write the character", at);
                        }
                        out.push(c);
                    }
                    'u' if self.peek() == Some('{') => out.push(self.braced_escape(at)?),
                    other => return err(format!("invalid escape \\{other} in a Lua string"), at),
                }
            } else {
                out.push(c);
            }
        }
    }

    /// A Lua long string `[[…]]` or `[==[…]==]`; `None` if `[` starts no long bracket.
    fn long_bracket(&mut self, at: usize) -> Result<Option<String>, CallError> {
        let rest = &self.src[self.pos + 1..];
        let level = rest.chars().take_while(|&c| c == '=').count();
        if !rest[level..].starts_with('[') {
            return Ok(None);
        }
        let body_start = self.pos + 1 + level + 1;
        let close = format!("]{}]", "=".repeat(level));
        let Some(end) = self.src[body_start..].find(&close) else { return err("unterminated long string", at) };
        let mut body = &self.src[body_start..body_start + end];
        // A newline right after the opening bracket is not part of the string.
        body = body.strip_prefix("\r\n").or_else(|| body.strip_prefix('\n')).unwrap_or(body);
        self.pos = body_start + end + close.len();
        Ok(Some(body.to_owned()))
    }

    /// The rest of a `\u{…}` escape (JavaScript's and Lua's), at its `{`.
    fn braced_escape(&mut self, at: usize) -> Result<char, CallError> {
        self.bump();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.bump();
        }
        let digits = &self.src[start..self.pos];
        if self.bump() != Some('}') || digits.is_empty() {
            return err("malformed \\u{…} escape", at);
        }
        let value = u32::from_str_radix(digits, 16).ok().and_then(char::from_u32);
        value.ok_or(CallError { message: "invalid code point".into(), at: Some(at) })
    }

    fn hex_value(&mut self, digits: usize, at: usize) -> Result<u32, CallError> {
        let start = self.pos;
        for _ in 0..digits {
            if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                return err(format!("an escape needs {digits} hexadecimal digits"), at);
            }
            self.bump();
        }
        Ok(u32::from_str_radix(&self.src[start..self.pos], 16).expect("hex digits"))
    }

    fn hex_escape(&mut self, digits: usize, at: usize) -> Result<char, CallError> {
        let value = self.hex_value(digits, at)?;
        char::from_u32(value).ok_or(CallError { message: "invalid code point in an escape".into(), at: Some(at) })
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    dialect: Dialect,
}

fn keyword(dialect: Dialect, name: &str) -> bool {
    match dialect {
        Dialect::Python => matches!(
            name,
            "False"
                | "None"
                | "True"
                | "and"
                | "as"
                | "assert"
                | "async"
                | "await"
                | "break"
                | "class"
                | "continue"
                | "def"
                | "del"
                | "elif"
                | "else"
                | "except"
                | "finally"
                | "for"
                | "from"
                | "global"
                | "if"
                | "import"
                | "in"
                | "is"
                | "lambda"
                | "nonlocal"
                | "not"
                | "or"
                | "pass"
                | "raise"
                | "return"
                | "try"
                | "while"
                | "with"
                | "yield"
        ),
        Dialect::JavaScript => matches!(
            name,
            "true"
                | "false"
                | "null"
                | "undefined"
                | "new"
                | "this"
                | "typeof"
                | "void"
                | "delete"
                | "function"
                | "class"
                | "await"
                | "yield"
                | "import"
                | "super"
                | "in"
                | "instanceof"
                | "var"
                | "let"
                | "const"
                | "return"
                | "if"
                | "else"
                | "for"
                | "while"
                | "do"
                | "switch"
                | "case"
                | "throw"
                | "try"
                | "catch"
                | "finally"
                | "with"
                | "debugger"
                | "export"
                | "extends"
        ),
        Dialect::Lua => matches!(
            name,
            "and"
                | "break"
                | "do"
                | "else"
                | "elseif"
                | "end"
                | "false"
                | "for"
                | "function"
                | "goto"
                | "if"
                | "in"
                | "local"
                | "nil"
                | "not"
                | "or"
                | "repeat"
                | "return"
                | "then"
                | "true"
                | "until"
                | "while"
        ),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, at)| *at)
    }

    fn next(&mut self) -> Option<Tok> {
        let tok = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        tok
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), CallError> {
        if self.eat(c) { Ok(()) } else { err(format!("expected {c:?} {what}"), self.at()) }
    }

    fn call(&mut self) -> Result<ScriptCall, CallError> {
        let mut path = Vec::new();
        loop {
            let at = self.at();
            match self.next() {
                Some(Tok::Name(name)) if !keyword(self.dialect, &name) => path.push(name),
                _ => return err("a call starts with a function's name: name(…) or module.name(…)", at),
            }
            if !self.eat('.') {
                break;
            }
        }
        if self.dialect != Dialect::Python && path.len() > 2 {
            return err("a call names a function as name(…) or module.name(…)", 0);
        }
        self.expect('(', "after the function's name: only a call is accepted")?;
        let mut args = Vec::new();
        while !self.eat(')') {
            let value = self.value(0, true)?;
            args.push(value);
            if self.eat(')') {
                break;
            }
            self.expect(',', "between arguments")?;
            if self.dialect == Dialect::Lua && self.peek() == Some(&Tok::Punct(')')) {
                return err("a trailing comma is not allowed in a Lua call", self.at());
            }
        }
        if self.pos < self.toks.len() {
            return err("unexpected text after the call: only one call is accepted", self.at());
        }
        let name = path.pop().expect("at least one name");
        let module = (!path.is_empty()).then(|| path.join("."));
        Ok(ScriptCall { module, name, args })
    }

    fn value(&mut self, depth: usize, top: bool) -> Result<Value, CallError> {
        if depth > MAX_DEPTH {
            return err("literals nest too deeply", self.at());
        }
        let at = self.at();
        let d = self.dialect;
        let Some(tok) = self.next() else { return err("expected a literal", at) };
        let value = match tok {
            Tok::Int(i) => Value::Int(i),
            Tok::Float(f) => Value::Float(f),
            Tok::Punct(sign @ ('-' | '+')) => {
                if sign == '+' && d == Dialect::Lua {
                    return err("Lua has no unary +", at);
                }
                match self.next() {
                    Some(Tok::Int(i)) if sign == '-' => Value::Int(-i),
                    Some(Tok::Int(i)) => Value::Int(i),
                    Some(Tok::Float(f)) if sign == '-' => Value::Float(-f),
                    Some(Tok::Float(f)) => Value::Float(f),
                    _ => return err("a sign must be followed by a number", at),
                }
            }
            Tok::Str(mut s) => {
                // Python joins adjacent string literals.
                while d == Dialect::Python
                    && let Some(Tok::Str(more)) = self.peek()
                {
                    s.push_str(more);
                    self.pos += 1;
                }
                Value::Str(s)
            }
            Tok::Name(name) => match (d, name.as_str()) {
                (Dialect::Python, "True") | (Dialect::JavaScript | Dialect::Lua, "true") => Value::Bool(true),
                (Dialect::Python, "False") | (Dialect::JavaScript | Dialect::Lua, "false") => Value::Bool(false),
                (Dialect::Python, "None") | (Dialect::JavaScript, "null") | (Dialect::Lua, "nil") => Value::Null,
                (Dialect::JavaScript, "undefined") if top => Value::Undefined,
                (Dialect::JavaScript, "undefined") => {
                    return err("undefined is accepted only as an argument of its own; use null", at);
                }
                _ => return err(format!("{name:?} is a name, not a literal: arguments must be literals"), at),
            },
            Tok::Punct('[') if d != Dialect::Lua => Value::List(self.items(']', depth)?),
            Tok::Punct('(') if d == Dialect::Python => {
                // A parenthesised literal, or a tuple (passed as a list).
                if self.eat(')') {
                    Value::List(Vec::new())
                } else {
                    let first = self.value(depth + 1, false)?;
                    if self.eat(')') {
                        first
                    } else {
                        self.expect(',', "in a tuple")?;
                        let mut items = vec![first];
                        items.extend(self.items(')', depth)?);
                        Value::List(items)
                    }
                }
            }
            Tok::Punct('{') if d == Dialect::Lua => self.lua_table(depth)?,
            Tok::Punct('{') => self.map(depth)?,
            _ => return err("expected a literal", at),
        };
        if matches!(self.peek(), Some(Tok::Punct('.' | '(' | '[' | '+' | '-' | '='))) {
            return err("arguments must be literals: no operators, calls or indexing", self.at());
        }
        Ok(value)
    }

    /// Items up to `close`, comma-separated, with an optional trailing comma.
    fn items(&mut self, close: char, depth: usize) -> Result<Vec<Value>, CallError> {
        let mut items = Vec::new();
        while !self.eat(close) {
            if self.peek() == Some(&Tok::Punct(',')) {
                return err("empty elements are not accepted", self.at());
            }
            items.push(self.value(depth + 1, false)?);
            if self.eat(close) {
                break;
            }
            self.expect(',', "between elements")?;
        }
        Ok(items)
    }

    /// A Python dict or a JavaScript object, after its `{`.
    fn map(&mut self, depth: usize) -> Result<Value, CallError> {
        let mut entries = Vec::new();
        while !self.eat('}') {
            let at = self.at();
            let key = match (self.next(), self.dialect) {
                (Some(Tok::Str(s)), _) => s,
                (Some(Tok::Name(n)), Dialect::JavaScript) => n,
                (Some(Tok::Int(i)), Dialect::JavaScript) => i.to_string(),
                (Some(Tok::Float(f)), Dialect::JavaScript) => {
                    let mut text = String::new();
                    Value::Float(f).write_json(&mut text);
                    text.trim_end_matches(".0").to_owned()
                }
                (_, Dialect::Python) => return err("dict keys must be strings", at),
                _ => return err("object keys must be names, strings or numbers", at),
            };
            // A set (`{1, 2}`) or a shorthand property (`{a}`) has no colon.
            self.expect(':', "after a key")?;
            let value = self.value(depth + 1, false)?;
            entries.push((key, value));
            if self.eat('}') {
                break;
            }
            self.expect(',', "between entries")?;
        }
        Ok(Value::Map(entries))
    }

    /// A Lua table constructor after its `{`: positional fields only (a list) or named
    /// ones only (`name = v`, `["key"] = v`: a map).
    fn lua_table(&mut self, depth: usize) -> Result<Value, CallError> {
        let mut items = Vec::new();
        let mut entries = Vec::new();
        while !self.eat('}') {
            let at = self.at();
            let named = match (self.peek(), self.toks.get(self.pos + 1).map(|(t, _)| t)) {
                (Some(Tok::Name(n)), Some(Tok::Punct('='))) if !keyword(Dialect::Lua, n) => {
                    let Some(Tok::Name(n)) = self.next() else { unreachable!() };
                    self.pos += 1;
                    Some(n)
                }
                (Some(Tok::Punct('[')), _) => {
                    self.pos += 1;
                    let key = match self.next() {
                        Some(Tok::Str(s)) => s,
                        _ => return err("table keys in brackets must be strings", at),
                    };
                    self.expect(']', "after a table key")?;
                    self.expect('=', "after a table key")?;
                    Some(key)
                }
                _ => None,
            };
            let value = self.value(depth + 1, false)?;
            match named {
                Some(key) => entries.push((key, value)),
                None => items.push(value),
            }
            if !items.is_empty() && !entries.is_empty() {
                return err("a table must be a list or a map of string keys, not both", at);
            }
            if self.eat('}') {
                break;
            }
            if !self.eat(',') && !self.eat(';') {
                return err("expected ',' or ';' between table fields", self.at());
            }
        }
        Ok(if entries.is_empty() { Value::List(items) } else { Value::Map(entries) })
    }
}

/// Parses `source` as a call in `dialect`.
pub fn parse(source: &str, dialect: Dialect) -> Result<ScriptCall, CallError> {
    let toks = Lexer { src: source, pos: 0, dialect }.tokens()?;
    Parser { toks, pos: 0, end: source.len(), dialect }.call()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(src: &str, d: Dialect) -> String {
        match parse(src, d) {
            Ok(call) => {
                let mut out = String::new();
                Value::List(call.args).write_json(&mut out);
                out
            }
            Err(e) => format!("error: {}", e.message),
        }
    }

    #[test]
    fn python_literals() {
        let d = Dialect::Python;
        assert_eq!(
            args(r#"f(1, -2.5, 0x1F, 1_000, 'a\n', "b\x41", r'\d', True, None, [1, (2, 3)], {'k': (4,)}, "x" 'y')"#, d),
            r#"[1,-2.5,31,1000,"a\n","bA","\\d",true,null,[1,[2,3]],{"k":[4]},"xy"]"#
        );
        assert_eq!(args("f(1.0, 1e3, .5, ())", d), "[1.0,1000.0,0.5,[]]");
        assert_eq!(parse("pkg.mod.f()", d).unwrap().module.as_deref(), Some("pkg.mod"));
        for bad in [
            "f(x)",
            "f(1+2)",
            "f(1) # c",
            "f(b'x')",
            "f(f'{x}')",
            "f({1, 2})",
            "f({1: 2})",
            "f(1j)",
            "f(__import__('os'))",
            "f(1); g()",
            "f(a=1)",
            "f([1,,2])",
            "f",
            "True()",
            "f(99999999999999999999)",
        ] {
            assert!(parse(bad, d).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn javascript_literals() {
        let d = Dialect::JavaScript;
        assert_eq!(
            args(
                r#"f(1, -2.5, 0b11, 'a\u{1F600}', "\uD83D\uDE00", `t`, true, null, undefined, [1, 2,], {a: 1, "b": [], 3: 'c'})"#,
                d
            ),
            r#"[1,-2.5,3,"a😀","😀","t",true,null,null,[1,2],{"a":1,"b":[],"3":"c"}]"#
        );
        assert_eq!(
            parse("f(undefined, 1)", d).unwrap().to_json(),
            r#"{"module":null,"name":"f","args":[null,1],"undefined":[0]}"#
        );
        for bad in [
            "f(`${x}`)",
            "f(1) // c",
            "f(/* c */ 1)",
            "f(10n)",
            "f([undefined])",
            "f({a})",
            "f({...x})",
            "f(Infinity)",
            "f(new Date())",
            "a.b.c()",
            "f(1)(2)",
            "f(() => 1)",
        ] {
            assert!(parse(bad, d).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn lua_literals() {
        let d = Dialect::Lua;
        assert_eq!(
            args(
                r#"f(1, -2.5, 0xff, 'a\65\z   b', [[long]], [==[x]]y]==], true, nil, {1, 2; 3}, {a = 1, ["b c"] = {}})"#,
                d
            ),
            r#"[1,-2.5,255,"aAb","long","x]]y",true,null,[1,2,3],{"a":1,"b c":[]}]"#
        );
        assert_eq!(parse("m.f()", d).unwrap().module.as_deref(), Some("m"));
        for bad in [
            "f(x)",
            "f(1) -- c",
            "f({1, a = 2})",
            "f({[1] = 2})",
            "m:f()",
            "f(1,)",
            "f(+1)",
            "f(os.exit())",
            "f(\"\\q\")",
            "f{1}",
        ] {
            assert!(parse(bad, d).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn floats_stay_floats() {
        let mut out = String::new();
        Value::Float(3.0).write_json(&mut out);
        assert_eq!(out, "3.0");
        let mut out = String::new();
        Value::Float(1e300).write_json(&mut out);
        assert!(out.contains('e'), "{out}");
    }
}
