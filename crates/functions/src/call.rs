//! The `call` of a request: Go source that must be exactly one expression starting with
//! the name of something the package exports, e.g. `Encode(57.64911, 10.40744)`.
//!
//! It is tokenised and parsed here, before anything is cloned or built, so that nothing
//! can break out of the generated source (statements, declarations, comments, unbalanced
//! brackets), and classified: a call of a name with only literal arguments (numbers,
//! strings, runes, booleans, nil, possibly signed or parenthesised) is served by the
//! package's dispatcher binary with the arguments given at run time; anything else needs
//! a build of its own. The jail, not this parser, is what contains the code.

use std::fmt;

/// Deepest bracket and operator nesting accepted.
const MAX_DEPTH: usize = 64;

/// Why a call is not acceptable; says what and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid call: {message}{}", at.map(|at| format!(" (at byte {at})")).unwrap_or_default())]
pub struct CallError {
    pub message: String,
    pub at: Option<usize>,
}

fn err<T>(message: impl Into<String>, at: Option<usize>) -> Result<T, CallError> {
    Err(CallError { message: message.into(), at })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Ident,
    Keyword,
    Int,
    Float,
    Imag,
    Char,
    Str,
    Op,
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    text: String,
    at: usize,
}

/// A literal argument, as the dispatcher receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A numeric or rune literal (Go source text) under unary `+`/`-` signs.
    Number {
        kind: NumberKind,
        negate: bool,
        literal: String,
    },
    /// A string literal, as Go source text (quoted).
    Str(String),
    Bool(bool),
    Nil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberKind {
    Int,
    Float,
    Imag,
    Char,
}

impl Arg {
    /// The dispatcher's argv form: `kind:sign:literal`.
    pub fn encode(&self) -> String {
        match self {
            Arg::Number { kind, negate, literal } => {
                let kind = match kind {
                    NumberKind::Int => "int",
                    NumberKind::Float => "float",
                    NumberKind::Imag => "imag",
                    NumberKind::Char => "char",
                };
                format!("{kind}:{}:{literal}", if *negate { "-" } else { "+" })
            }
            Arg::Str(literal) => format!("string:+:{literal}"),
            Arg::Bool(b) => format!("bool:+:{b}"),
            Arg::Nil => "nil:+:nil".to_owned(),
        }
    }
}

/// What the dispatcher reads from stdin: the function's name, then each argument in its
/// argv form ([`Arg::encode`]), each as `LENGTH:BYTES` (any byte may occur in a literal).
pub fn dispatch_input(name: &str, args: &[Arg]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in std::iter::once(name.to_owned()).chain(args.iter().map(Arg::encode)) {
        out.extend_from_slice(format!("{}:", item.len()).as_bytes());
        out.extend_from_slice(item.as_bytes());
    }
    out
}

/// A parsed, validated call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The leading identifier: what the package must export.
    pub name: String,
    /// The call's tokens joined by spaces: what the per-call build puts after `pkg.`.
    pub normalized: String,
    /// `Some` when the dispatcher can serve it: `name(args...)` with literal arguments.
    pub literal_args: Option<Vec<Arg>>,
}

impl Call {
    pub fn is_exported(&self) -> bool {
        self.name.chars().next().is_some_and(char::is_uppercase)
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

/// A Go interpreted string literal holding `text` exactly: printable ASCII as is, quotes
/// and backslashes escaped, every other character as `\U` and eight hex digits. For
/// callers that put arbitrary text into a call.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Parses and validates `source`. Its length is the caller's to bound (`limits.max_call`);
/// the parser's work is linear in it, and its nesting is bounded.
pub fn parse(source: &str) -> Result<Call, CallError> {
    let tokens = lex(source)?;
    let Some(first) = tokens.first() else {
        return err("empty", None);
    };
    if first.kind != Kind::Ident {
        return err(
            format!(
                "must start with the name of something the package exports, e.g. Encode(1.5, 2), not {:?}",
                first.text
            ),
            Some(first.at),
        );
    }
    let mut parser = Parser { tokens: &tokens, pos: 0 };
    let expr = parser.expr(0)?;
    if let Some(extra) = parser.peek() {
        let message = match extra.text.as_str() {
            "," => "a call is one expression, but a ',' follows it".to_owned(),
            ";" => "statements are not allowed: unexpected ';'".to_owned(),
            ")" | "]" | "}" => format!("unbalanced {:?}", extra.text),
            other => format!("unexpected {other:?} after the expression"),
        };
        return err(message, Some(extra.at));
    }
    let normalized = tokens.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
    let literal_args = match expr {
        Expr::Call { func, args, spread: false } if matches!(*func, Expr::Ident(_)) => {
            args.into_iter().map(literal_arg).collect::<Option<Vec<_>>>()
        }
        _ => None,
    };
    Ok(Call { name: first.text.clone(), normalized, literal_args })
}

/// What the parser keeps of an expression: only what classification needs.
#[derive(Debug)]
enum Expr {
    Ident(String),
    Literal(Kind, String),
    Unary(String, Box<Expr>),
    Paren(Box<Expr>),
    Call { func: Box<Expr>, args: Vec<Expr>, spread: bool },
    Other,
}

fn literal_arg(expr: Expr) -> Option<Arg> {
    match expr {
        Expr::Paren(inner) => literal_arg(*inner),
        Expr::Ident(name) => match name.as_str() {
            "true" => Some(Arg::Bool(true)),
            "false" => Some(Arg::Bool(false)),
            "nil" => Some(Arg::Nil),
            _ => None,
        },
        Expr::Literal(Kind::Str, text) => Some(Arg::Str(text)),
        Expr::Literal(kind, literal) => {
            let kind = match kind {
                Kind::Int => NumberKind::Int,
                Kind::Float => NumberKind::Float,
                Kind::Imag => NumberKind::Imag,
                Kind::Char => NumberKind::Char,
                _ => return None,
            };
            Some(Arg::Number { kind, negate: false, literal })
        }
        Expr::Unary(op, inner) if op == "+" || op == "-" => match literal_arg(*inner)? {
            Arg::Number { kind, negate, literal } => Some(Arg::Number { kind, negate: negate ^ (op == "-"), literal }),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------------------------
// Lexer: Go's tokens, less comments (refused) and automatic semicolons (irrelevant:
// the call is re-emitted on one line).

const OPERATORS: [&str; 47] = [
    "<<=", ">>=", "&^=", "...", "&&", "||", "<-", "++", "--", "==", "!=", "<=", ">=", ":=", "+=", "-=", "*=", "/=",
    "%=", "&=", "|=", "^=", "<<", ">>", "&^", "+", "-", "*", "/", "%", "&", "|", "^", "<", ">", "=", "!", "~", "(",
    ")", "[", "]", "{", "}", ",", ";", ".",
];

const KEYWORDS: [&str; 25] = [
    "break",
    "case",
    "chan",
    "const",
    "continue",
    "default",
    "defer",
    "else",
    "fallthrough",
    "for",
    "func",
    "go",
    "goto",
    "if",
    "import",
    "interface",
    "map",
    "package",
    "range",
    "return",
    "select",
    "struct",
    "switch",
    "type",
    "var",
];

fn is_letter(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn lex(source: &str) -> Result<Vec<Token>, CallError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < source.len() {
        let c = source[i..].chars().next().expect("in bounds");
        let start = i;
        if c == '\0' {
            return err("NUL bytes are not allowed", Some(i));
        }
        if matches!(c, ' ' | '\t' | '\n' | '\r') {
            i += 1;
            continue;
        }
        if source[i..].starts_with("//") || source[i..].starts_with("/*") {
            return err("comments are not allowed", Some(i));
        }
        let (kind, len) = if is_letter(c) {
            let len = source[i..].find(|c: char| !(is_letter(c) || c.is_numeric())).unwrap_or(source.len() - i);
            let word = &source[i..i + len];
            (if KEYWORDS.contains(&word) { Kind::Keyword } else { Kind::Ident }, len)
        } else if c.is_ascii_digit() || (c == '.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            number(source, i)?
        } else if c == '\'' {
            (Kind::Char, quoted(source, i, '\'')?)
        } else if c == '"' {
            (Kind::Str, quoted(source, i, '"')?)
        } else if c == '`' {
            match source[i + 1..].find('`') {
                Some(end) => (Kind::Str, end + 2),
                None => return err("unterminated raw string", Some(i)),
            }
        } else if c == ':' {
            if source[i..].starts_with(":=") {
                return err("assignments are not allowed", Some(i));
            }
            (Kind::Op, 1)
        } else if let Some(op) = OPERATORS.iter().find(|op| source[i..].starts_with(**op)) {
            (Kind::Op, op.len())
        } else {
            return err(format!("unexpected character {c:?}"), Some(i));
        };
        let text = &source[start..start + len];
        if kind == Kind::Str && text.starts_with('`') && text.contains('\r') {
            return err("carriage returns in raw strings are not allowed", Some(start));
        }
        tokens.push(Token { kind, text: text.to_owned(), at: start });
        i = start + len;
    }
    Ok(tokens)
}

/// A Go numeric literal at `at`: its kind and length, validated (digits of the base,
/// underscores only between digits, exponents where allowed).
fn number(source: &str, at: usize) -> Result<(Kind, usize), CallError> {
    let b = source.as_bytes();
    let mut i = at;
    let bad = |msg: &str| err(format!("malformed number: {msg}"), Some(at));
    let (base, prefixed) = match (b[i], b.get(i + 1).map(u8::to_ascii_lowercase)) {
        (b'0', Some(b'x')) => (16, true),
        (b'0', Some(b'b')) => (2, true),
        (b'0', Some(b'o')) => (8, true),
        _ => (10, false),
    };
    if prefixed {
        i += 2;
    }
    // Digits of `base` with single underscores between them (or right after a prefix).
    let digits = |i: &mut usize, base: u32, after_prefix: bool| -> Result<usize, CallError> {
        let candidate = |c: u8| {
            if base == 16 { c.is_ascii_hexdigit() } else { c.is_ascii_digit() }
        };
        let (mut count, mut last_underscore, mut underscore_ok) = (0, false, after_prefix);
        while let Some(&c) = b.get(*i) {
            if c == b'_' {
                if !underscore_ok || last_underscore {
                    return err("'_' must separate successive digits", Some(at));
                }
                last_underscore = true;
            } else if candidate(c) {
                if (c as char).to_digit(base).is_none() {
                    return err(format!("invalid digit {:?} in base {base} literal", c as char), Some(at));
                }
                (count, last_underscore, underscore_ok) = (count + 1, false, true);
            } else {
                break;
            }
            *i += 1;
        }
        if last_underscore {
            return err("'_' must separate successive digits", Some(at));
        }
        Ok(count)
    };
    let mantissa = digits(&mut i, base, prefixed)?;
    let mut kind = Kind::Int;
    if (base == 10 || base == 16) && b.get(i) == Some(&b'.') {
        i += 1;
        kind = Kind::Float;
        let fraction = digits(&mut i, base, false)?;
        if mantissa + fraction == 0 {
            return bad("no digits");
        }
    } else if mantissa == 0 {
        return bad("no digits");
    }
    let exponent = match (base, b.get(i).map(u8::to_ascii_lowercase)) {
        (10, Some(b'e')) | (16, Some(b'p')) => true,
        (16, _) if kind == Kind::Float => {
            return bad("hexadecimal mantissa requires a 'p' exponent");
        }
        _ => false,
    };
    if exponent {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i, 10, false)? == 0 {
            return bad("exponent has no digits");
        }
        kind = Kind::Float;
    }
    if b.get(i) == Some(&b'i') {
        i += 1;
        kind = Kind::Imag;
    }
    // Legacy octal: 0777 (but 0789 is only valid as a float or imaginary literal).
    let text = &source[at..i];
    if kind == Kind::Int
        && !prefixed
        && text.len() > 1
        && text.starts_with('0')
        && text.bytes().any(|c| c == b'8' || c == b'9')
    {
        return bad("invalid digit in octal literal");
    }
    if b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.') {
        return bad("unexpected character after number");
    }
    Ok((kind, i - at))
}

/// A rune or interpreted string literal at `at` delimited by `quote`; returns its length.
fn quoted(source: &str, at: usize, quote: char) -> Result<usize, CallError> {
    let what = if quote == '"' { "string" } else { "rune" };
    let mut chars = source[at + 1..].char_indices();
    let mut count = 0;
    loop {
        let Some((offset, c)) = chars.next() else {
            return err(format!("unterminated {what} literal"), Some(at));
        };
        match c {
            '\n' => return err(format!("newline in {what} literal"), Some(at)),
            c if c == quote => {
                if quote == '\'' && count != 1 {
                    return err("a rune literal holds exactly one character", Some(at));
                }
                return Ok(offset + 2);
            }
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return err(format!("unterminated {what} literal"), Some(at));
                };
                let hex = |n: usize, chars: &mut std::str::CharIndices<'_>| -> Result<u32, CallError> {
                    let mut value = 0u32;
                    for _ in 0..n {
                        match chars.next().and_then(|(_, c)| c.to_digit(16)) {
                            Some(d) => value = value * 16 + d,
                            None => return err("malformed escape sequence", Some(at)),
                        }
                    }
                    Ok(value)
                };
                match e {
                    'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' => {}
                    '\'' if quote == '\'' => {}
                    '"' if quote == '"' => {}
                    'x' => {
                        hex(2, &mut chars)?;
                    }
                    'u' | 'U' => {
                        let value = hex(if e == 'u' { 4 } else { 8 }, &mut chars)?;
                        if char::from_u32(value).is_none() {
                            return err("escape is an invalid Unicode code point", Some(at));
                        }
                    }
                    '0'..='7' => {
                        let mut value = e.to_digit(8).expect("octal");
                        for _ in 0..2 {
                            match chars.next().and_then(|(_, c)| c.to_digit(8)) {
                                Some(d) => value = value * 8 + d,
                                None => return err("malformed octal escape", Some(at)),
                            }
                        }
                        if value > 255 {
                            return err("octal escape value > 255", Some(at));
                        }
                    }
                    _ => return err(format!("unknown escape sequence \\{e}"), Some(at)),
                }
                count += 1;
            }
            _ => count += 1,
        }
    }
}

// ---------------------------------------------------------------------------------
// Parser: Go's expression grammar (operands, selectors, index, slice and call
// suffixes, composite literals, type literals for conversions and make), without
// function literals and struct or interface types, which would bring statements or
// declarations along.

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

fn binary_precedence(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" | "<" | "<=" | ">" | ">=" => 3,
        "+" | "-" | "|" | "^" => 4,
        "*" | "/" | "%" | "<<" | ">>" | "&" | "&^" => 5,
        _ => return None,
    })
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_is(&self, text: &str) -> bool {
        self.peek().is_some_and(|t| t.text == text && matches!(t.kind, Kind::Op | Kind::Keyword))
    }

    fn next(&mut self) -> Result<&Token, CallError> {
        let end = self.tokens.last().map(|t| t.at + t.text.len());
        let token = self.tokens.get(self.pos);
        self.pos += 1;
        token.map_or_else(|| err("unexpected end of the call", end), Ok)
    }

    fn expect(&mut self, text: &str) -> Result<(), CallError> {
        let token = self.next()?;
        if token.text == text && matches!(token.kind, Kind::Op | Kind::Keyword) {
            Ok(())
        } else {
            err(format!("expected {text:?}, found {:?}", token.text), Some(token.at))
        }
    }

    fn deeper(depth: usize, at: Option<usize>) -> Result<usize, CallError> {
        if depth >= MAX_DEPTH { err("nested too deeply", at) } else { Ok(depth + 1) }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, CallError> {
        let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
        self.binary(1, depth)
    }

    fn binary(&mut self, min: u8, depth: usize) -> Result<Expr, CallError> {
        let mut left = self.unary(depth)?;
        while let Some(prec) = self.peek().filter(|t| t.kind == Kind::Op).and_then(|t| binary_precedence(&t.text)) {
            if prec < min {
                break;
            }
            self.pos += 1;
            let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
            self.binary(prec + 1, depth)?;
            left = Expr::Other;
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, CallError> {
        if let Some(op) = self.peek().filter(|t| t.kind == Kind::Op).map(|t| t.text.clone())
            && matches!(op.as_str(), "+" | "-" | "!" | "^" | "*" | "&" | "<-")
        {
            self.pos += 1;
            let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
            return Ok(Expr::Unary(op, Box::new(self.unary(depth)?)));
        }
        self.primary(depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, CallError> {
        let (mut expr, mut typeish) = self.operand(depth)?;
        while let Some(token) = self.peek().filter(|t| t.kind == Kind::Op) {
            match token.text.as_str() {
                "." => {
                    self.pos += 1;
                    let next = self.next()?;
                    match next.kind {
                        Kind::Ident => typeish = true,
                        Kind::Op if next.text == "(" => {
                            if self.peek_is("type") {
                                return err("type switches are not allowed", self.peek().map(|t| t.at));
                            }
                            self.typ(depth)?;
                            self.expect(")")?;
                            typeish = false;
                        }
                        _ => {
                            return err(format!("expected a name after '.', found {:?}", next.text), Some(next.at));
                        }
                    }
                    expr = Expr::Other;
                }
                "[" => {
                    self.pos += 1;
                    self.index(depth)?;
                    expr = Expr::Other;
                }
                "(" => {
                    self.pos += 1;
                    let (args, spread) = self.arguments(depth)?;
                    expr = Expr::Call { func: Box::new(expr), args, spread };
                    typeish = false;
                }
                "{" if typeish => {
                    self.pos += 1;
                    self.elements(depth)?;
                    expr = Expr::Other;
                    typeish = false;
                }
                _ => break,
            }
        }
        Ok(expr)
    }

    /// An operand, and whether it may name a type (so that `{` starts a composite literal).
    fn operand(&mut self, depth: usize) -> Result<(Expr, bool), CallError> {
        let token = self.next()?.clone();
        match token.kind {
            Kind::Ident => Ok((Expr::Ident(token.text), true)),
            Kind::Int | Kind::Float | Kind::Imag | Kind::Char | Kind::Str => {
                Ok((Expr::Literal(token.kind, token.text), false))
            }
            Kind::Keyword => match token.text.as_str() {
                "map" | "chan" => {
                    self.pos -= 1;
                    self.typ(depth)?;
                    Ok((Expr::Other, true))
                }
                "func" => err("function literals and types are not allowed", Some(token.at)),
                "struct" | "interface" => {
                    err(format!("{} types are not allowed in a call", token.text), Some(token.at))
                }
                other => {
                    err(format!("statements and declarations are not allowed: unexpected {other:?}"), Some(token.at))
                }
            },
            Kind::Op => match token.text.as_str() {
                "(" => {
                    let inner = self.expr(depth)?;
                    self.expect(")")?;
                    Ok((Expr::Paren(Box::new(inner)), true))
                }
                "[" => {
                    self.pos -= 1;
                    self.typ(depth)?;
                    Ok((Expr::Other, true))
                }
                "=" | "+=" | "-=" | "*=" | "/=" | "%=" | "&=" | "|=" | "^=" | "<<=" | ">>=" | "&^=" | "++" | "--" => {
                    err("assignments are not allowed", Some(token.at))
                }
                ";" => err("statements are not allowed: unexpected ';'", Some(token.at)),
                ")" | "]" | "}" => err(format!("unbalanced {:?}", token.text), Some(token.at)),
                other => err(format!("unexpected {other:?}"), Some(token.at)),
            },
        }
    }

    /// After `[`: an index, a slice, or type arguments; consumes the `]`.
    fn index(&mut self, depth: usize) -> Result<(), CallError> {
        let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
        if self.peek_is("]") {
            return err("missing index", self.peek().map(|t| t.at));
        }
        let mut colons = 0;
        let mut commas = 0;
        loop {
            if self.peek_is(":") {
                self.pos += 1;
                colons += 1;
            } else if self.peek_is("]") {
                self.pos += 1;
                break;
            } else {
                self.expr(depth)?;
                if self.peek_is(",") {
                    self.pos += 1;
                    commas += 1;
                    if self.peek_is("]") {
                        self.pos += 1;
                        break;
                    }
                }
            }
            if colons > 2 || (colons > 0 && commas > 0) {
                return err("malformed index or slice expression", self.peek().map(|t| t.at));
            }
        }
        Ok(())
    }

    /// After `(`: arguments with an optional trailing `...`; consumes the `)`.
    fn arguments(&mut self, depth: usize) -> Result<(Vec<Expr>, bool), CallError> {
        let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
        let mut args = Vec::new();
        let mut spread = false;
        while !self.peek_is(")") {
            args.push(self.expr(depth)?);
            if self.peek_is("...") {
                self.pos += 1;
                spread = true;
            }
            if self.peek_is(",") {
                self.pos += 1;
            } else if !self.peek_is(")") {
                let token = self.next()?;
                return err(format!("expected ',' or ')' in argument list, found {:?}", token.text), Some(token.at));
            }
            if spread && !self.peek_is(")") {
                return err("'...' must follow the last argument", self.peek().map(|t| t.at));
            }
        }
        self.pos += 1;
        Ok((args, spread))
    }

    /// After `{`: composite literal elements; consumes the `}`.
    fn elements(&mut self, depth: usize) -> Result<(), CallError> {
        let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
        while !self.peek_is("}") {
            self.element(depth)?;
            if self.peek_is(":") {
                self.pos += 1;
                self.element(depth)?;
            }
            if self.peek_is(",") {
                self.pos += 1;
            } else if !self.peek_is("}") {
                let token = self.next()?;
                return err(
                    format!("expected ',' or '}}' in composite literal, found {:?}", token.text),
                    Some(token.at),
                );
            }
        }
        self.pos += 1;
        Ok(())
    }

    fn element(&mut self, depth: usize) -> Result<(), CallError> {
        if self.peek_is("{") {
            self.pos += 1;
            self.elements(depth)
        } else {
            self.expr(depth).map(drop)
        }
    }

    /// A type: a (qualified, possibly instantiated) name, or a pointer, slice, array,
    /// map or channel type.
    fn typ(&mut self, depth: usize) -> Result<(), CallError> {
        let depth = Self::deeper(depth, self.peek().map(|t| t.at))?;
        let token = self.next()?.clone();
        match (token.kind, token.text.as_str()) {
            (Kind::Ident, _) => {
                if self.peek_is(".") {
                    self.pos += 1;
                    let name = self.next()?;
                    if name.kind != Kind::Ident {
                        return err("expected a type name", Some(name.at));
                    }
                }
                if self.peek_is("[") {
                    self.pos += 1;
                    self.index(depth)?;
                }
                Ok(())
            }
            (Kind::Op, "*") => self.typ(depth),
            (Kind::Op, "(") => {
                self.typ(depth)?;
                self.expect(")")
            }
            (Kind::Op, "[") => {
                if self.peek_is("...") {
                    self.pos += 1;
                } else if !self.peek_is("]") {
                    self.expr(depth)?;
                }
                self.expect("]")?;
                self.typ(depth)
            }
            (Kind::Keyword, "map") => {
                self.expect("[")?;
                self.typ(depth)?;
                self.expect("]")?;
                self.typ(depth)
            }
            (Kind::Keyword, "chan") => {
                if self.peek_is("<-") {
                    self.pos += 1;
                }
                self.typ(depth)
            }
            (Kind::Op, "<-") => {
                self.expect("chan")?;
                self.typ(depth)
            }
            (Kind::Keyword, "func") => err("function types are not allowed", Some(token.at)),
            (Kind::Keyword, "struct" | "interface") => {
                err(format!("{} types are not allowed in a call", token.text), Some(token.at))
            }
            _ => err(format!("expected a type, found {:?}", token.text), Some(token.at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(call: &str) -> Option<Vec<String>> {
        parse(call).unwrap().literal_args.map(|args| args.iter().map(Arg::encode).collect())
    }

    #[test]
    fn literal_calls_go_to_the_dispatcher() {
        for (call, want) in [
            ("Encode(57.64911, 10.40744)", vec!["float:+:57.64911", "float:+:10.40744"]),
            ("Smile()", vec![]),
            ("Pair(21, \"hi\")", vec!["int:+:21", "string:+:\"hi\""]),
            (
                "F(-1, +2.5e3, -(-3), 'x', `raw\\`, true, nil, 0x1F, 1_000, 2i, .5)",
                vec![
                    "int:-:1",
                    "float:+:2.5e3",
                    "int:+:3",
                    "char:+:'x'",
                    "string:+:`raw\\`",
                    "bool:+:true",
                    "nil:+:nil",
                    "int:+:0x1F",
                    "int:+:1_000",
                    "imag:+:2i",
                    "float:+:.5",
                ],
            ),
            ("Unicodé(\"\\u00e9\\n\\x41\\101\")", vec!["string:+:\"\\u00e9\\n\\x41\\101\""]),
            ("Trailing(1, 2,)", vec!["int:+:1", "int:+:2"]),
        ] {
            assert_eq!(args(call), Some(want.into_iter().map(String::from).collect()), "{call}");
        }
    }

    #[test]
    fn other_expressions_need_their_own_build() {
        for call in [
            "Encode(1, 2) + \"x\"",
            "NewT(1).Method()",
            "Max[int](1, 2)",
            "Sum([]int{1, 2, 3}...)",
            "F(float32(1.5))",
            "F(x)",
            "F(-\"s\")",
            "T{A: 1, B: []int{2}}.M()",
            "F(map[string]int{\"a\": 1}, make(chan int), s[1:2], s[:], a[1:2:3])",
            "F(G(1))",
            "Version",
            "F(1)(2)",
            "F(<-c, *p, &x, !b, ^1)",
            "F(x.(T))",
        ] {
            let parsed = parse(call).unwrap_or_else(|e| panic!("{call}: {e}"));
            assert_eq!(parsed.literal_args, None, "{call}");
        }
        assert_eq!(parse("NewT(1).Method()").unwrap().normalized, "NewT ( 1 ) . Method ( )");
    }

    #[test]
    fn anything_that_is_not_one_expression_is_refused() {
        for (call, message) in [
            ("", "empty"),
            ("   ", "empty"),
            ("Foo()) ; os.Exit(1); (x", "unbalanced \")\""),
            ("Foo()\n}\nfunc init() {", "unbalanced \"}\""),
            ("Foo() // comment", "comments are not allowed"),
            ("Foo(/* x */)", "comments are not allowed"),
            ("Foo(), Bar()", "a ',' follows"),
            ("Foo(); Bar()", "unexpected ';'"),
            ("x := Foo()", "assignments are not allowed"),
            ("X = 1", "unexpected \"=\""),
            ("Foo(func() int { return 1 }())", "function literals"),
            ("Foo(struct{}{})", "struct types"),
            ("Foo(", "unexpected end"),
            ("Foo(1", "unexpected end"),
            ("Foo(\"unterminated)", "unterminated string"),
            ("Foo('ab')", "exactly one character"),
            ("Foo(\"\\q\")", "unknown escape"),
            ("Foo(0x)", "no digits"),
            ("Foo(1__0)", "'_' must separate"),
            ("Foo(0b102)", "invalid digit"),
            ("Foo(089)", "octal"),
            ("Foo(1.5.5)", "unexpected character after number"),
            ("Foo(\0)", "NUL"),
            ("-Foo()", "must start with the name"),
            ("\"x\"", "must start with the name"),
            ("Foo(x.(type))", "type switches"),
            ("Foo(#)", "unexpected character"),
            ("go Foo()", "must start with the name"),
            ("Foo(if)", "statements and declarations"),
            ("Foo(x++)", "expected ',' or ')'"),
        ] {
            let e = parse(call).expect_err(call);
            assert!(e.to_string().contains(message), "{call:?}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("F({}1{})", "(".repeat(1_000), ")".repeat(1_000));
        assert!(parse(&deep).unwrap_err().message.contains("nested too deeply"));
        let unary = format!("F({}1)", "^".repeat(1_000));
        assert!(parse(&unary).unwrap_err().message.contains("nested too deeply"));
        // Long input is the caller's to bound; the parser just refuses what is not one call.
        assert!(parse(&"F(1)".repeat(5000)).is_err());
        let long = format!("F({})", ["1"; 20_000].join(", "));
        assert_eq!(parse(&long).unwrap().literal_args.unwrap().len(), 20_000);
    }

    #[test]
    fn exported_means_upper_case_first_letter() {
        assert!(parse("Ünïcode()").unwrap().is_exported());
        assert!(!parse("encode()").unwrap().is_exported());
        assert!(!parse("_X()").unwrap().is_exported());
    }
}
