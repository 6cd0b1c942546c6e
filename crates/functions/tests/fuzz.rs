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
        prop_assert_eq!(literal.last(), Some(&Arg::Str(call::quote(&text))));
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
