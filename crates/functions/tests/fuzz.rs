//! Property tests (fuzzing) of what requests feed the core: the call parser, which must
//! never panic and must accept exactly one expression, and the import-path validation,
//! whose accepted paths must be safe to clone from and to name directories with.

use proptest::prelude::*;
use skyisland_functions::call::{self, Arg};
use skyisland_functions::import_path::ImportPath;

/// Go-ish token soup: what a hostile caller would try.
fn soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("Hello".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(";".to_owned()),
        Just(",".to_owned()),
        Just("func".to_owned()),
        Just("init".to_owned()),
        Just("//".to_owned()),
        Just("/*".to_owned()),
        Just("\"".to_owned()),
        Just("`".to_owned()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just("\n".to_owned()),
        Just("os.Exit(1)".to_owned()),
        Just("0x".to_owned()),
        Just("1e9999".to_owned()),
        Just("...".to_owned()),
        "[A-Za-z_][A-Za-z0-9_]{0,8}",
        "[0-9]{1,30}",
        "\\PC{1,4}",
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.join(""))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_call_parser_never_panics(text in "\\PC{0,64}") {
        let _ = call::parse(&text);
    }

    #[test]
    fn token_soup_is_refused_unless_it_is_one_expression(text in soup()) {
        if let Ok(call) = call::parse(&text) {
            // What it accepted re-parses to the same thing, and holds nothing that ends
            // or comments out the generated expression.
            let again = call::parse(&call.normalized).expect("the normalized form parses");
            prop_assert_eq!(&again, &call);
            // Where it has no literals to hide them in: no statement ends, comments,
            // function literals, and balanced brackets.
            let code = &call.normalized;
            if !code.contains(['"', '`', '\'']) {
                let breaks_out = [";", "//", "/*", "\n"].iter().any(|s| code.contains(s))
                    || code.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == "func");
                prop_assert!(!breaks_out, "{}", code);
                let mut depth = 0i32;
                for c in code.chars() {
                    depth += match c { '(' | '[' | '{' => 1, ')' | ']' | '}' => -1, _ => 0 };
                    prop_assert!(depth >= 0, "{}", code);
                }
                prop_assert_eq!(depth, 0, "{}", code);
            }
        }
    }

    #[test]
    fn literal_calls_reach_the_dispatcher_argument_by_argument(
        ints in prop::collection::vec(any::<i64>(), 0..5),
        text in "\\PC{0,20}",
    ) {
        let mut args: Vec<String> = ints.iter().map(|n| n.to_string()).collect();
        args.push(call::quote(&text));
        let source = format!("Fn({})", args.join(", "));
        let call = call::parse(&source).unwrap_or_else(|e| panic!("{source}: {e}"));
        let literal = call.literal_args.expect("literal arguments go to the dispatcher");
        prop_assert_eq!(literal.len(), ints.len() + 1);
        for (arg, n) in literal.iter().zip(&ints) {
            match arg {
                Arg::Number { negate, literal, .. } => {
                    prop_assert_eq!(*negate, *n < 0);
                    prop_assert_eq!(literal.as_str(), n.unsigned_abs().to_string());
                }
                other => prop_assert!(false, "{other:?} for {n}"),
            }
        }
        // The string comes out as the text it was made from (decoded as Go would).
        match literal.last() {
            Some(Arg::Str(quoted)) => {
                let decoded = go_unquote(quoted);
                prop_assert_eq!(decoded.as_deref(), Some(text.as_str()));
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn accepted_import_paths_are_safe(text in "[a-z0-9./:@_~-]{0,40}|\\PC{0,40}") {
        if let Ok(path) = ImportPath::parse(&text) {
            prop_assert!(!path.full.contains(".."), "{}", path.full);
            prop_assert!(!path.full.contains("://") && !path.full.contains('@') && !path.full.contains(':'));
            prop_assert!(path.full.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b)));
            prop_assert!(path.full.split('/').all(|e| !e.is_empty() && !e.starts_with('-') && !e.starts_with('.')));
            prop_assert_eq!(path.repo.split('/').count(), 3);
            prop_assert!(path.clone_url(&Default::default()).starts_with("https://"));
        }
    }
}

/// A Go string literal's value (interpreted or raw), as Go's strconv.Unquote gives it.
fn go_unquote(literal: &str) -> Option<String> {
    if let Some(raw) = literal.strip_prefix('`').and_then(|l| l.strip_suffix('`')) {
        return Some(raw.replace('\r', ""));
    }
    let body = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| -> Option<u32> {
            let digits: String = (0..n).map(|_| chars.next()).collect::<Option<String>>()?;
            u32::from_str_radix(&digits, 16).ok()
        };
        match chars.next()? {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            'x' => out.push(hex(&mut chars, 2)? as u8),
            'u' => out.extend_from_slice(char::from_u32(hex(&mut chars, 4)?)?.to_string().as_bytes()),
            'U' => out.extend_from_slice(char::from_u32(hex(&mut chars, 8)?)?.to_string().as_bytes()),
            d @ '0'..='7' => {
                let rest: String = (0..2).map(|_| chars.next()).collect::<Option<String>>()?;
                out.push(u8::from_str_radix(&format!("{d}{rest}"), 8).ok()?);
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// A string and a Go literal spelling it, in one of the ways Go allows.
fn string_literal() -> impl Strategy<Value = (String, String)> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ,.;:()+*/=!?-]{1,6}".prop_map(|s| (s.clone(), s)),
        Just(("\"".to_owned(), "\\\"".to_owned())),
        Just(("\\".to_owned(), "\\\\".to_owned())),
        Just(("\n".to_owned(), "\\n".to_owned())),
        Just(("\t".to_owned(), "\\t".to_owned())),
        Just(("A".to_owned(), "\\x41".to_owned())),
        Just(("A".to_owned(), "\\101".to_owned())),
        Just(("é".to_owned(), "\\u00e9".to_owned())),
        Just(("😀".to_owned(), "\\U0001f600".to_owned())),
        Just(("日本".to_owned(), "日本".to_owned())),
    ];
    let interpreted = prop::collection::vec(piece, 0..6).prop_map(|pieces| {
        let value: String = pieces.iter().map(|(v, _)| v.as_str()).collect();
        let literal: String = pieces.iter().map(|(_, l)| l.as_str()).collect();
        (value, format!("\"{literal}\""))
    });
    let raw = "[a-zA-Z0-9 \"\\\\'{}();/*-]{0,12}".prop_map(|s| (s.clone(), format!("`{s}`")));
    prop_oneof![3 => interpreted, 1 => raw]
}

/// An argument: its Go literal, and what the parser must make of it.
#[derive(Clone, Debug)]
enum Want {
    Int(bool, String),
    Float(bool, String),
    Str(String),
    Bool(bool),
    Nil,
}

fn argument() -> impl Strategy<Value = (String, Want)> {
    prop_oneof![
        (any::<bool>(), any::<u64>())
            .prop_map(|(neg, n)| { (format!("{}{n}", if neg { "-" } else { "" }), Want::Int(neg, n.to_string())) }),
        (any::<bool>(), any::<u32>()).prop_map(|(neg, n)| {
            let text = format!("0x{n:x}");
            (format!("{}{text}", if neg { "-" } else { "" }), Want::Int(neg, text))
        }),
        (any::<bool>(), 0.0f64..1e12).prop_map(|(neg, f)| {
            let text = format!("{f:.3}");
            (format!("{}{text}", if neg { "-" } else { "" }), Want::Float(neg, text))
        }),
        string_literal().prop_map(|(value, literal)| (literal, Want::Str(value))),
        any::<bool>().prop_map(|b| (b.to_string(), Want::Bool(b))),
        Just(("nil".to_owned(), Want::Nil)),
    ]
}

/// One mutation of a valid call: something inserted at a position.
fn hostile_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(";".to_owned()),
        Just("//".to_owned()),
        Just("/*".to_owned()),
        Just("\n".to_owned()),
        Just(")".to_owned()),
        Just("(".to_owned()),
        Just("}".to_owned()),
        Just("func(){}".to_owned()),
        Just("os.Exit(1)".to_owned()),
        Just("\"".to_owned()),
        Just("`".to_owned()),
        Just(",,".to_owned()),
        Just("...".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Calls made by the grammar are all accepted, reach the dispatcher, and each argument
    /// comes out as the value it spells (strings decoded, not compared as text).
    #[test]
    fn calls_from_the_grammar_parse_into_the_values_they_spell(
        name in "[A-Z][A-Za-z0-9_]{0,10}",
        args in prop::collection::vec(argument(), 0..6),
    ) {
        let source = format!("{name}({})", args.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(", "));
        let call = call::parse(&source).unwrap_or_else(|e| panic!("{source}: {e}"));
        prop_assert_eq!(&call.name, &name);
        let literal = call.literal_args.expect("literal arguments go to the dispatcher");
        prop_assert_eq!(literal.len(), args.len());
        for (got, (text, want)) in literal.iter().zip(&args) {
            match (got, want) {
                (Arg::Number { negate, literal, .. }, Want::Int(neg, n) | Want::Float(neg, n)) => {
                    prop_assert_eq!((*negate, literal.as_str()), (*neg, n.as_str()), "{}", text);
                }
                (Arg::Str(quoted), Want::Str(value)) => {
                    let decoded = go_unquote(quoted);
                    prop_assert_eq!(decoded.as_deref(), Some(value.as_str()), "{} became {}", text, quoted);
                }
                (Arg::Bool(b), Want::Bool(w)) => prop_assert_eq!(b, w),
                (Arg::Nil, Want::Nil) => {}
                (got, want) => prop_assert!(false, "{} parsed as {:?}, not {:?}", text, got, want),
            }
        }
    }

    /// The same calls with one hostile token inserted anywhere: refused, or still one
    /// expression with nothing that ends or comments out the generated program.
    #[test]
    fn one_hostile_token_in_a_valid_call_never_breaks_out(
        args in prop::collection::vec(argument(), 1..4),
        token in hostile_token(),
        at in any::<prop::sample::Index>(),
    ) {
        let source = format!("Fn({})", args.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(", "));
        // Between characters (not inside a multi-byte one).
        let cuts: Vec<usize> = source.char_indices().map(|(i, _)| i).chain([source.len()]).collect();
        let cut = cuts[at.index(cuts.len())];
        let mutated = format!("{}{token}{}", &source[..cut], &source[cut..]);
        if let Ok(call) = call::parse(&mutated) {
            let code = &call.normalized;
            let again = call::parse(code).expect("the normalized form parses");
            prop_assert_eq!(&again, &call);
            if !code.contains(['"', '`', '\'']) {
                prop_assert!(![";", "//", "/*", "\n"].iter().any(|s| code.contains(s)), "{}", code);
            }
        }
    }

    /// Import paths made by the grammar are all accepted, with the repository and package
    /// directory they name; one bad change to them is refused.
    #[test]
    fn import_paths_from_the_grammar_are_accepted_and_one_bad_change_is_not(
        labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 2..4),
        owner in "[A-Za-z0-9_][A-Za-z0-9_.~-]{0,10}[A-Za-z0-9_]",
        name in "[A-Za-z0-9_][A-Za-z0-9_.~-]{0,10}[A-Za-z0-9_]",
        dirs in prop::collection::vec("[A-Za-z0-9_][A-Za-z0-9_-]{0,6}", 0..3),
        bad in prop_oneof![
            Just("..".to_owned()), Just(".hidden".to_owned()), Just("-x".to_owned()), Just("a b".to_owned()),
            Just("a;b".to_owned()), Just("".to_owned()), Just("a@b".to_owned()), Just("é".to_owned()),
            Just("a:1".to_owned()), Just("a%2e".to_owned()),
        ],
        at in 0usize..4,
    ) {
        prop_assume!(!owner.contains("..") && !name.contains(".."));
        let host = labels.join(".");
        let mut elements = vec![host.clone(), owner.clone(), name.clone()];
        elements.extend(dirs.iter().cloned());
        let path = elements.join("/");
        let parsed = ImportPath::parse(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        prop_assert_eq!(&parsed.repo, &format!("{host}/{owner}/{name}"));
        prop_assert_eq!(&parsed.subdir, &dirs.join("/"));
        prop_assert!(parsed.clone_url(&Default::default()).starts_with("https://"));
        // One element replaced by something bad.
        let mut broken = elements.clone();
        let index = at.min(broken.len() - 1);
        broken[index] = bad.clone();
        let broken = broken.join("/");
        prop_assert!(ImportPath::parse(&broken).is_err(), "{} was accepted", broken);
    }
}
