//! The formatter: the campaigns are (nearly) canonical already, a messy file comes out in
//! the canonical layout, and random programs, laid out at random with comments everywhere,
//! format soundly (same tree, same comments, stable).

use chrono::TimeZone as _;
use moments::ast::*;
use moments::diagnostic::SourceFile;
use moments::format::{format_parsed, format_source, FormatError};
use moments::parse::{self, Parsed};
use proptest::prelude::*;

fn parse_text(text: &str) -> Parsed {
    parse::parse(0, &SourceFile::new("t.moment", text))
}

fn comment_texts(parsed: &Parsed) -> Vec<String> {
    parsed.comments.iter().map(|c| c.text.clone()).collect()
}

fn format_text(text: &str) -> Result<String, FormatError> {
    format_source(&SourceFile::new("t.moment", text))
}

/// Formats soundly: no error, same tree, same comments, formats to itself.
fn assert_sound(name: &str, text: &str) -> String {
    let before = parse_text(text);
    assert!(
        before.diagnostics.is_empty(),
        "{name}: {:?}",
        before.diagnostics
    );
    let formatted = match format_text(text) {
        Ok(formatted) => formatted,
        Err(error) => panic!("{name}: {error}\n--- input:\n{text}"),
    };
    let after = parse_text(&formatted);
    assert!(
        after.diagnostics.is_empty(),
        "{name}: {:?}",
        after.diagnostics
    );
    assert_eq!(after.file, before.file, "{name}: the tree changed");
    assert_eq!(
        comment_texts(&after),
        comment_texts(&before),
        "{name}: comments changed"
    );
    assert_eq!(
        format_text(&formatted).ok().as_deref(),
        Some(formatted.as_str()),
        "{name}: not idempotent"
    );
    assert!(formatted.ends_with('\n') && !formatted.ends_with("\n\n"));
    formatted
}

// ---------------------------------------------------------------------------------------
// (1) The campaigns

/// Campaign files whose layout may differ from the canonical one: none. `.ci/run` also
/// runs `moments fmt --check campaigns`.
const NOT_YET_CANONICAL: &[&str] = &[];

/// The lines only in `old` (`-`, with their line number) and only in `new` (`+`), from a
/// longest common subsequence.
fn line_diff(old: &str, new: &str) -> Vec<String> {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("- line {}: {}", i + 1, old[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", new[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn campaigns_format_soundly_and_are_canonical() {
    let mut entries: Vec<_> = std::fs::read_dir("campaigns")
        .expect("campaigns directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "moment"))
        .collect();
    entries.sort();
    assert!(!entries.is_empty());
    let mut changed = Vec::new();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("readable campaign");
        let formatted = assert_sound(&name, &text);
        if formatted != text {
            eprintln!("{name}: the formatter would change:");
            for line in line_diff(&text, &formatted) {
                eprintln!("  {line}");
            }
            changed.push(name);
        }
    }
    for name in &changed {
        assert!(
            NOT_YET_CANONICAL.contains(&name.as_str()),
            "{name} is not in the canonical layout (see the lines above)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// (2) A messy file

const MESSY: &str = r#"
   # Shop schema, badly laid out.


customer { email : text ,first_name:text?   # may be missing
      tier: text="standard"


   tags : list< text >? }
event a "A"
event b "B" {x: int}

event c "C" catalog {
  # the product
  product_id: text
}
event wide "A Rather Long Source Name For An Event" { first_field: text, second_field: number, third: int? }
defaults { timezone "UTC" cap 3 per customer per 7d   consent email requires (customer.email_opt_in) }
moment   m   "The \"title\""{trigger{on product_added   # entry
  where ((event.price * event.quantity) >= 20) and (not did(order_completed within 1h))
      # why wait


    wait 2d
    unless order_completed where (order_completed.total > (1 + 2)) within 1h}
  message email {  # the email
    subject "Hi {{ customer.first_name }}\t!"
      body """
        First line.

          Indented line.
      """      # after the body
  }
  kpi "Rate" = rate(cart_viewed within 24h after send) goal >= 15%
  limit 1 per customer per 7d  # once a week


  quiet hours 9:00 to 8:00
  holdout 10.0%
  # last rules
  priority 5
  # the end of the moment
}
# the end
"#;

const MESSY_FORMATTED: &str = r#"# Shop schema, badly laid out.

customer {
  email: text
  first_name: text?  # may be missing
  tier: text = "standard"

  tags: list<text>?
}

event a "A"
event b "B" { x: int }

event c "C" catalog {
  # the product
  product_id: text
}
event wide "A Rather Long Source Name For An Event" {
  first_field: text
  second_field: number
  third: int?
}

defaults {
  timezone "UTC"
  cap 3 per customer per 7d
  consent email requires customer.email_opt_in
}

moment m "The \"title\"" {
  trigger {
    on product_added  # entry
    where event.price * event.quantity >= 20
      and not did(order_completed within 1h)
    # why wait

    wait 2d
    unless order_completed where order_completed.total > 1 + 2 within 1h
  }

  message email {  # the email
    subject "Hi {{ customer.first_name }}\t!"
    body """
      First line.

        Indented line.
    """  # after the body
  }

  kpi "Rate" = rate(cart_viewed within 24h after send)
    goal >= 15%

  limit 1 per customer per 7d  # once a week

  quiet hours 09:00 to 08:00
  holdout 10%
  # last rules
  priority 5
  # the end of the moment
}
# the end
"#;

#[test]
fn a_messy_file_comes_out_canonical() {
    let formatted = assert_sound("messy", MESSY);
    assert_eq!(formatted, MESSY_FORMATTED);
    assert_eq!(format_text(MESSY_FORMATTED).unwrap(), MESSY_FORMATTED);
}

#[test]
fn comments_inside_expressions_survive() {
    let text = "moment m \"t\" {\n  trigger {\n    on e\n    let x = count(e  # one\n      # two\n      within 1h)  # three\n    where a  # four\n      or b\n  }\n}\n";
    let formatted = assert_sound("inner comments", text);
    assert_eq!(
        formatted,
        "moment m \"t\" {\n  trigger {\n    on e\n    let x = count(e within 1h)  # one\n    # two\n    # three\n    where a  # four\n      or b\n  }\n}\n"
    );
}

#[test]
fn one_line_blocks_open_up() {
    let text = "moment m \"t\" { trigger { on e } message sms { text \"hi\" } kpi \"k\" = rate(e within 1d after send) limit 2 per customer }";
    let formatted = assert_sound("one line", text);
    assert_eq!(
        formatted,
        "moment m \"t\" {\n  trigger {\n    on e\n  }\n\n  message sms {\n    text \"hi\"\n  }\n\n  kpi \"k\" = rate(e within 1d after send)\n\n  limit 2 per customer\n}\n"
    );
}

#[test]
fn strings_keep_their_kind() {
    let text = "moment m \"t\" {\n  message email {\n    subject \"two\\nlines\"\n    body \"\"\"one line\"\"\"\n    preheader \"\"\"\n    \"\"\"\n  }\n}\n";
    let formatted = assert_sound("strings", text);
    assert_eq!(
        formatted,
        "moment m \"t\" {\n  message email {\n    subject \"two\\nlines\"\n    body \"\"\"\n      one line\n    \"\"\"\n    preheader \"\"\"\n    \"\"\"\n  }\n}\n"
    );
}

#[test]
fn empty_blocks_and_files() {
    assert_eq!(format_text("").unwrap(), "");
    assert_eq!(format_text("\n\n  \n").unwrap(), "");
    assert_eq!(
        format_text("# only\n\n\n# comments").unwrap(),
        "# only\n\n# comments\n"
    );
    assert_eq!(
        format_text("customer{}defaults{\n}moment m \"t\" {\n\n}\nevent e \"E\" {}").unwrap(),
        "customer {}\n\ndefaults {}\n\nmoment m \"t\" {}\n\nevent e \"E\" {}\n"
    );
    assert_eq!(
        format_text("moment m \"t\" {\n  trigger {   # nothing yet\n  }\n}\n").unwrap(),
        "moment m \"t\" {\n  trigger {  # nothing yet\n  }\n}\n"
    );
}

#[test]
fn windows_line_endings_and_tabs_change_nothing() {
    let text = std::fs::read_to_string("campaigns/cart_wobble.moment").expect("campaign");
    let lf = format_text(&text).unwrap();
    let crlf = assert_sound("crlf", &text.replace('\n', "\r\n"));
    assert_eq!(crlf, lf);
    let tabs = assert_sound("tabs", &text.replace("  ", "\t"));
    assert_eq!(tabs, lf);
}

#[test]
fn a_brace_in_a_comment_inside_an_event_keeps_its_meaning() {
    // A `{` in a comment or in the source name is not a block.
    assert_sound("brace", "event e # {\n  \"E\"\nevent f \"F{\" {}\n");
}

#[test]
fn syntax_errors_are_not_formatted() {
    for text in [
        "moment m \"t\" {",
        "moment m \"t\" { limt 3 }",
        "moment m \"t\" { trigger { where a = 1 } }",
        "customer { a: }",
        "\u{201C}",
    ] {
        match format_text(text) {
            Err(FormatError::Syntax(diagnostics)) => assert!(!diagnostics.is_empty()),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn every_prefix_of_every_campaign_formats_or_is_refused_without_panicking() {
    let text = std::fs::read_to_string("campaigns/cart_wobble.moment").expect("campaign");
    for (i, _) in text.char_indices() {
        let prefix = &text[..i];
        match format_text(prefix) {
            Ok(_) | Err(FormatError::Syntax(_)) => {}
            Err(error) => panic!("prefix of {i} bytes: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// (3) Random programs

fn sp() -> Span {
    Span::default()
}

fn ident(name: &str) -> Ident {
    Ident {
        name: name.to_string(),
        span: sp(),
    }
}

fn expr(kind: ExprKind) -> Expr {
    Expr { kind, span: sp() }
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b",
        "total",
        "customer",
        "event",
        "x_1",
        "_y",
        "now",
        "order_completed",
    ])
    .prop_map(String::from)
}

fn event_name() -> impl Strategy<Value = Ident> {
    prop::sample::select(vec!["order_completed", "cart_viewed", "e", "product_added"])
        .prop_map(ident)
}

fn path() -> impl Strategy<Value = Path> {
    prop::collection::vec(name(), 1..4).prop_map(|names| Path {
        segments: names.iter().map(|n| ident(n)).collect(),
        span: sp(),
    })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            'a', 'b', ' ', '"', '\\', '\n', '\t', '#', '{', '}', 'é', '\r', '\'',
        ]),
        0..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// A `"""` value as the parser leaves it: no line with only spaces, one line at least
/// without indentation.
fn triple_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            0usize..3,
            prop::sample::select(vec![
                "",
                "Hello {{ customer.first_name | default('there') }},",
                "a \"quote\" and a # hash",
                "{ \"json\": 1 }",
                "ok",
                "trailing space ",
            ]),
        ),
        0..5,
    )
    .prop_map(|lines| {
        let mut lines: Vec<String> = lines
            .into_iter()
            .map(|(indent, line)| {
                if line.is_empty() {
                    String::new()
                } else {
                    format!("{}{line}", " ".repeat(indent * 2))
                }
            })
            .collect();
        if let Some(first) = lines.iter_mut().find(|l| !l.is_empty()) {
            *first = first.trim_start().to_string();
        }
        lines.join("\n")
    })
}

fn duration() -> impl Strategy<Value = Duration> {
    (
        0u64..10_000,
        prop::sample::select(vec![
            DurationUnit::Seconds,
            DurationUnit::Minutes,
            DurationUnit::Hours,
            DurationUnit::Days,
            DurationUnit::Weeks,
        ]),
    )
        .prop_map(|(amount, unit)| Duration {
            amount,
            unit,
            span: sp(),
        })
}

fn time() -> impl Strategy<Value = TimeOfDay> {
    (0u32..24, 0u32..60).prop_map(|(hour, minute)| TimeOfDay {
        hour,
        minute,
        span: sp(),
    })
}

fn date() -> impl Strategy<Value = chrono::NaiveDate> {
    (1000i32..9999, 1u32..13, 1u32..29)
        .prop_map(|(y, m, d)| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("a real date"))
}

fn number() -> impl Strategy<Value = f64> {
    (0u32..100_000, 0i32..5).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e))
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        (0i64..i64::MAX).prop_map(Literal::Int),
        (0i64..100).prop_map(Literal::Int),
        number().prop_map(Literal::Float),
        number().prop_map(Literal::Percent),
        text().prop_map(Literal::Text),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::None),
        duration().prop_map(Literal::Duration),
        date().prop_map(Literal::Date),
        (
            0i64..4_000_000_000,
            -12i32..14,
            prop::sample::select(vec![0u32, 500_000_000, 123_456_000, 1])
        )
            .prop_map(|(secs, hours, nanos)| {
                let offset = chrono::FixedOffset::east_opt(hours * 3600).expect("an offset");
                let utc = chrono::Utc
                    .timestamp_opt(secs, nanos)
                    .single()
                    .expect("an instant");
                Literal::DateTime(utc.with_timezone(&offset))
            }),
        time().prop_map(Literal::Time),
    ]
}

fn aggregate_fn() -> impl Strategy<Value = AggregateFn> {
    prop::sample::select(AggregateFn::ALL.iter().map(|(_, f)| *f).collect::<Vec<_>>())
}

fn expression() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(|l| expr(ExprKind::Literal(l))),
        path().prop_map(|p| expr(ExprKind::Path(p))),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec![UnaryOp::Not, UnaryOp::Neg]),
                inner.clone()
            )
                .prop_map(|(op, e)| expr(ExprKind::Unary(op, Box::new(e)))),
            (
                prop::sample::select(vec![
                    BinaryOp::Or,
                    BinaryOp::And,
                    BinaryOp::Eq,
                    BinaryOp::Ne,
                    BinaryOp::Lt,
                    BinaryOp::Le,
                    BinaryOp::Gt,
                    BinaryOp::Ge,
                    BinaryOp::In,
                    BinaryOp::Contains,
                    BinaryOp::Crosses,
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Div,
                ]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, l, r)| expr(ExprKind::Binary(
                    op,
                    Box::new(l),
                    Box::new(r)
                ))),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|items| expr(ExprKind::List(items))),
            (
                prop::sample::select(vec!["lower", "default", "days_since", "len", "f"]),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(function, args)| expr(ExprKind::Call {
                    function: ident(function),
                    args
                })),
            (
                aggregate_fn(),
                event_name(),
                prop::collection::vec(name(), 0..3),
                any::<bool>(),
                prop::option::of(inner),
                prop::option::of((duration(), any::<bool>())),
                prop::collection::vec(name(), 0..3),
            )
                .prop_map(
                    |(function, event, field, across, condition, within, then)| {
                        let field = if function.takes_field() && field.is_empty() {
                            vec![ident("total")]
                        } else {
                            field.iter().map(|n| ident(n)).collect()
                        };
                        let then_field = if function == AggregateFn::Last {
                            then.iter().map(|n| ident(n)).collect()
                        } else {
                            Vec::new()
                        };
                        expr(ExprKind::Aggregate(Box::new(Aggregate {
                            function,
                            function_span: sp(),
                            event,
                            field,
                            across_customers: across,
                            condition,
                            within: within.map(|(duration, after_send)| Within {
                                duration,
                                after_send,
                                span: sp(),
                            }),
                            then_field,
                        })))
                    }
                ),
        ]
    })
}

fn str_lit(value: String, triple: bool) -> StrLit {
    StrLit {
        value,
        triple,
        span: sp(),
    }
}

fn trigger_clause() -> impl Strategy<Value = TriggerClause> {
    prop_oneof![
        event_name()
            .prop_map(|event| TriggerClause::On(TriggerSource::Event { event, span: sp() })),
        (path(), time()).prop_map(|(date, at)| TriggerClause::On(TriggerSource::Anniversary {
            date,
            at,
            span: sp()
        })),
        (duration(), any::<bool>(), path(), time()).prop_map(|(offset, before, date, at)| {
            TriggerClause::On(TriggerSource::Offset {
                offset,
                direction: if before {
                    Direction::Before
                } else {
                    Direction::After
                },
                date,
                at,
                span: sp(),
            })
        }),
        (text(), prop::option::of(text())).prop_map(|(cron, zone)| {
            TriggerClause::On(TriggerSource::Every {
                cron: str_lit(cron, false),
                zone: zone.map(|z| str_lit(z, false)),
                span: sp(),
            })
        }),
        (name(), expression()).prop_map(|(name, value)| TriggerClause::Let {
            name: ident(&name),
            value,
            span: sp()
        }),
        expression().prop_map(|condition| TriggerClause::Where {
            condition,
            span: sp()
        }),
        (
            event_name(),
            prop::option::of(expression()),
            prop::option::of(duration())
        )
            .prop_map(|(event, condition, within)| TriggerClause::Unless {
                event,
                condition,
                within,
                span: sp()
            }),
        duration().prop_map(|delay| TriggerClause::Wait { delay, span: sp() }),
    ]
}

fn trigger() -> impl Strategy<Value = Trigger> {
    prop::collection::vec(trigger_clause(), 0..5).prop_map(|mut clauses| {
        // `unless E` then `where C` reads as `unless E where C`: no text says otherwise.
        for i in 1..clauses.len() {
            if matches!(clauses[i], TriggerClause::Where { .. }) {
                if let TriggerClause::Unless {
                    condition: None,
                    within: within @ None,
                    ..
                } = &mut clauses[i - 1]
                {
                    *within = Some(Duration {
                        amount: 1,
                        unit: DurationUnit::Hours,
                        span: sp(),
                    });
                }
            }
        }
        Trigger {
            clauses,
            span: sp(),
        }
    })
}

fn message_field() -> impl Strategy<Value = MessageField> {
    (
        prop::sample::select(vec!["subject", "body", "preheader", "text", "url"]),
        prop_oneof![
            text().prop_map(|t| str_lit(t, false)),
            triple_text().prop_map(|t| str_lit(t, true)),
        ],
    )
        .prop_map(|(name, template)| MessageField {
            name: ident(name),
            template,
            span: sp(),
        })
}

fn comparison() -> impl Strategy<Value = BinaryOp> {
    prop::sample::select(vec![
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
    ])
}

fn moment_item() -> impl Strategy<Value = MomentItem> {
    prop_oneof![
        trigger().prop_map(MomentItem::Trigger),
        (
            prop::sample::select(vec!["email", "sms", "push"]),
            prop::collection::vec(message_field(), 0..3)
        )
            .prop_map(|(channel, fields)| MomentItem::Message(Message {
                channel: ident(channel),
                fields,
                span: sp()
            })),
        (
            text(),
            expression(),
            prop::option::of((comparison(), expression()))
        )
            .prop_map(|(title, measure, goal)| MomentItem::Kpi(Kpi {
                title: str_lit(title, false),
                measure,
                goal: goal.map(|(op, target)| Goal {
                    op,
                    target,
                    span: sp()
                }),
                span: sp()
            })),
        (0u64..100, prop::option::of(duration())).prop_map(|(count, per)| MomentItem::Limit {
            count,
            per,
            span: sp()
        }),
        (time(), time()).prop_map(|(from, to)| MomentItem::QuietHours {
            from,
            to,
            span: sp()
        }),
        number().prop_map(|percent| MomentItem::Holdout {
            percent,
            span: sp()
        }),
        (date(), prop::option::of(date())).prop_map(|(from, until)| MomentItem::Active {
            from: Date {
                value: from,
                span: sp()
            },
            until: until.map(|value| Date { value, span: sp() }),
            span: sp()
        }),
        (0u64..1000).prop_map(|value| MomentItem::Priority { value, span: sp() }),
    ]
}

fn type_expr() -> impl Strategy<Value = TypeExpr> {
    let named = (
        prop::sample::select(vec!["text", "int", "number", "bool", "date", "timezone"]),
        any::<bool>(),
    )
        .prop_map(|(name, optional)| TypeExpr {
            kind: TypeExprKind::Named(ident(name)),
            optional,
            span: sp(),
        });
    named.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            (inner.clone(), any::<bool>()).prop_map(|(element, optional)| TypeExpr {
                kind: TypeExprKind::List(Box::new(element)),
                optional,
                span: sp(),
            }),
            (prop::collection::vec((name(), inner), 0..3), any::<bool>()).prop_map(
                |(fields, optional)| TypeExpr {
                    kind: TypeExprKind::Record(
                        fields
                            .into_iter()
                            .map(|(n, ty)| FieldDecl {
                                name: ident(&n),
                                ty,
                                default: None,
                                span: sp(),
                            })
                            .collect()
                    ),
                    optional,
                    span: sp(),
                }
            ),
        ]
    })
}

fn field_decl() -> impl Strategy<Value = FieldDecl> {
    (
        name(),
        type_expr(),
        prop::option::of(literal().prop_map(|l| expr(ExprKind::Literal(l)))),
    )
        .prop_map(|(n, ty, default)| FieldDecl {
            name: ident(&n),
            ty,
            default,
            span: sp(),
        })
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        prop::collection::vec(field_decl(), 0..4)
            .prop_map(|traits| Item::Customer(CustomerBlock { traits, span: sp() })),
        (
            event_name(),
            text(),
            any::<bool>(),
            prop::collection::vec(field_decl(), 0..6),
            any::<bool>()
        )
            .prop_map(|(name, source, catalog, fields, braces)| {
                let has_block = braces || !fields.is_empty();
                Item::Event(EventDecl {
                    name,
                    source: str_lit(source, false),
                    catalog,
                    fields,
                    has_block,
                    span: sp(),
                })
            }),
        prop::collection::vec(
            prop_oneof![
                text().prop_map(|zone| DefaultItem::Timezone {
                    zone: str_lit(zone, false),
                    span: sp()
                }),
                (0u64..10, duration()).prop_map(|(count, per)| DefaultItem::Cap {
                    count,
                    per,
                    span: sp()
                }),
                (prop::sample::select(vec!["email", "sms"]), expression()).prop_map(
                    |(channel, requires)| DefaultItem::Consent {
                        channel: ident(channel),
                        requires,
                        span: sp()
                    }
                ),
            ],
            0..4
        )
        .prop_map(|items| Item::Defaults(DefaultsBlock { items, span: sp() })),
        (name(), text(), prop::collection::vec(moment_item(), 0..6)).prop_map(
            |(id, title, items)| Item::Moment(Moment {
                id: ident(&id),
                title: str_lit(title, false),
                items,
                span: sp()
            })
        ),
    ]
}

fn file() -> impl Strategy<Value = File> {
    prop::collection::vec(item(), 0..4).prop_map(|items| File { items })
}

/// Writes a tree as a careless person would: random spacing, line breaks, blank lines,
/// comments wherever the grammar lets them go, redundant parentheses, clauses out of their
/// canonical order, other spellings of the same literal.
struct Messy {
    state: u64,
    out: String,
}

const COMMENTS: &[&str] = &[
    "# note",
    "#",
    "# a \"quoted\" } bit",
    "# \"\"\" not a string",
    "## twice",
    "# é ünïcode",
];

impl Messy {
    fn new(seed: u64) -> Messy {
        Messy {
            state: seed | 1,
            out: String::new(),
        }
    }

    fn roll(&mut self, n: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % n
    }

    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// White space between two tokens: at least one space or line break.
    fn gap(&mut self) {
        match self.roll(16) {
            0 => self.push("\n"),
            1 => self.push("\n\n   "),
            2 => self.push("   "),
            3 => {
                let c = COMMENTS[self.roll(COMMENTS.len() as u64) as usize];
                self.push("  ");
                self.push(c);
                self.push("\n");
            }
            4 => {
                let c = COMMENTS[self.roll(COMMENTS.len() as u64) as usize];
                self.push("\n\n    ");
                self.push(c);
                self.push("\n\n\n");
            }
            5 => self.push("\t"),
            _ => self.push(" "),
        }
    }

    /// Between two items of a block or file: usually a line break.
    fn item_gap(&mut self) {
        match self.roll(6) {
            0 => self.gap(),
            1 => self.push("\n\n\n  "),
            2 => {
                let c = COMMENTS[self.roll(COMMENTS.len() as u64) as usize];
                self.push("\n");
                self.push(c);
                self.push("\n");
            }
            _ => self.push("\n  "),
        }
    }

    /// Optional white space (around punctuation).
    fn maybe_gap(&mut self) {
        if self.roll(3) == 0 {
            self.gap();
        }
    }

    fn quote(&mut self, value: &str) {
        self.push("\"");
        for c in value.chars() {
            match c {
                '"' => self.push("\\\""),
                '\\' => self.push("\\\\"),
                '\n' => self.push("\\n"),
                '\t' if self.roll(2) == 0 => self.push("\\t"),
                c => self.out.push(c),
            }
        }
        self.push("\"");
    }

    fn str_lit(&mut self, lit: &StrLit) {
        if !lit.triple {
            return self.quote(&lit.value);
        }
        let simple = !lit.value.is_empty()
            && !lit.value.contains(['\n', '"'])
            && !lit.value.starts_with(' ');
        if simple && self.roll(2) == 0 {
            self.push("\"\"\"");
            self.push(&lit.value);
            self.push("\"\"\"");
            return;
        }
        let indent = " ".repeat(self.roll(8) as usize);
        self.push("\"\"\"\n");
        if !lit.value.is_empty() {
            for line in lit.value.split('\n') {
                if line.is_empty() {
                    if self.roll(2) == 0 {
                        self.push("   ");
                    }
                } else {
                    self.push(&indent);
                    self.push(line);
                }
                self.push("\n");
            }
        }
        let close = " ".repeat(self.roll(6) as usize);
        self.push(&close);
        self.push("\"\"\"");
    }

    fn duration(&mut self, d: &Duration) {
        if self.roll(4) == 0 {
            self.push("0");
        }
        self.push(&format!("{}{}", d.amount, d.unit.suffix()));
    }

    fn time(&mut self, t: &TimeOfDay) {
        if t.hour < 10 && self.roll(2) == 0 {
            self.push(&format!("{}:{:02}", t.hour, t.minute));
        } else {
            self.push(&t.to_string());
        }
    }

    fn number(&mut self, f: f64) {
        let mut text = format!("{f}");
        if !text.contains('.') && self.roll(2) == 0 {
            text.push_str(".0");
        }
        if text.contains('.') && self.roll(3) == 0 {
            text.push_str("00");
        }
        self.push(&text);
    }

    fn literal(&mut self, literal: &Literal) {
        match literal {
            Literal::Int(n) => {
                if self.roll(5) == 0 {
                    self.push("00");
                }
                self.push(&n.to_string());
            }
            Literal::Float(f) => {
                let mut text = format!("{f}");
                if !text.contains('.') {
                    text.push_str(".0");
                }
                if self.roll(3) == 0 {
                    text.push('0');
                }
                self.push(&text);
            }
            Literal::Percent(p) => {
                self.number(*p);
                self.push("%");
            }
            Literal::Text(t) => self.quote(t),
            Literal::Bool(b) => self.push(if *b { "true" } else { "false" }),
            Literal::None => self.push("none"),
            Literal::Duration(d) => self.duration(d),
            Literal::Date(d) => self.push(&d.format("%Y-%m-%d").to_string()),
            Literal::DateTime(dt) => {
                let format = match self.roll(3) {
                    0 => chrono::SecondsFormat::Nanos,
                    1 if dt.timestamp_subsec_nanos() == 0 => chrono::SecondsFormat::Secs,
                    _ => chrono::SecondsFormat::AutoSi,
                };
                let use_z = self.roll(2) == 0;
                self.push(&dt.to_rfc3339_opts(format, use_z));
            }
            Literal::Time(t) => self.time(t),
        }
    }

    fn path(&mut self, path: &Path) {
        for (i, segment) in path.segments.iter().enumerate() {
            if i > 0 {
                self.maybe_gap();
                self.push(".");
                self.maybe_gap();
            }
            self.push(&segment.name);
        }
    }

    /// An operand: compound ones always in parentheses, others sometimes.
    fn operand(&mut self, e: &Expr) {
        let compound = matches!(e.kind, ExprKind::Binary(..) | ExprKind::Unary(..));
        if compound || self.roll(6) == 0 {
            self.push("(");
            self.maybe_gap();
            self.expr(e);
            self.maybe_gap();
            self.push(")");
        } else {
            self.expr(e);
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Literal(l) => self.literal(l),
            ExprKind::Path(p) => self.path(p),
            ExprKind::List(items) => {
                self.push("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.maybe_gap();
                        self.push(",");
                    }
                    self.maybe_gap();
                    self.operand(item);
                }
                if !items.is_empty() && self.roll(3) == 0 {
                    self.push(",");
                }
                self.maybe_gap();
                self.push("]");
            }
            ExprKind::Unary(op, operand) => {
                match op {
                    UnaryOp::Not => {
                        self.push("not");
                        self.gap();
                    }
                    UnaryOp::Neg => {
                        self.push("-");
                        self.maybe_gap();
                    }
                }
                self.operand(operand);
            }
            ExprKind::Binary(op, left, right) => {
                self.operand(left);
                self.gap();
                self.push(op.symbol());
                self.gap();
                self.operand(right);
            }
            ExprKind::Call { function, args } => {
                self.push(&function.name);
                self.push("(");
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        self.maybe_gap();
                        self.push(",");
                    }
                    self.maybe_gap();
                    self.operand(arg);
                }
                self.maybe_gap();
                self.push(")");
            }
            ExprKind::Aggregate(a) => {
                self.push(a.function.name());
                self.push("(");
                self.maybe_gap();
                self.push(&a.event.name);
                for segment in &a.field {
                    self.push(".");
                    self.push(&segment.name);
                }
                // The clauses in a random order.
                let mut clauses = [0u8, 1, 2];
                for i in (1..3).rev() {
                    let j = self.roll(i as u64 + 1) as usize;
                    clauses.swap(i, j);
                }
                for clause in clauses {
                    match clause {
                        0 if a.across_customers => {
                            self.gap();
                            self.push("across");
                            self.gap();
                            self.push("customers");
                        }
                        1 => {
                            if let Some(condition) = &a.condition {
                                self.gap();
                                self.push("where");
                                self.gap();
                                self.operand(condition);
                            }
                        }
                        2 => {
                            if let Some(within) = &a.within {
                                self.gap();
                                self.push("within");
                                self.gap();
                                self.duration(&within.duration);
                                if within.after_send {
                                    self.gap();
                                    self.push("after");
                                    self.gap();
                                    self.push("send");
                                }
                            }
                        }
                        _ => {}
                    }
                }
                self.maybe_gap();
                self.push(")");
                for segment in &a.then_field {
                    self.maybe_gap();
                    self.push(".");
                    self.maybe_gap();
                    self.push(&segment.name);
                }
            }
        }
    }

    /// An expression in a clause: sometimes in redundant parentheses.
    fn top_expr(&mut self, e: &Expr) {
        if self.roll(5) == 0 {
            self.push("(");
            self.expr(e);
            self.push(")");
        } else {
            self.expr(e);
        }
    }

    fn type_expr(&mut self, ty: &TypeExpr) {
        match &ty.kind {
            TypeExprKind::Named(n) => self.push(&n.name),
            TypeExprKind::List(element) => {
                self.push("list");
                self.maybe_gap();
                self.push("<");
                self.maybe_gap();
                self.type_expr(element);
                self.maybe_gap();
                self.push(">");
            }
            TypeExprKind::Record(fields) => {
                self.push("{");
                self.fields(fields);
                self.push("}");
            }
        }
        if ty.optional {
            self.maybe_gap();
            self.push("?");
        }
    }

    fn fields(&mut self, fields: &[FieldDecl]) {
        for field in fields {
            self.item_gap();
            self.push(&field.name.name);
            self.maybe_gap();
            self.push(":");
            self.maybe_gap();
            self.type_expr(&field.ty);
            if let Some(default) = &field.default {
                self.gap();
                self.push("=");
                self.gap();
                self.top_expr(default);
            }
            if self.roll(2) == 0 {
                self.maybe_gap();
                self.push(",");
            }
        }
        self.item_gap();
    }

    fn block(&mut self, body: impl FnOnce(&mut Self)) {
        self.maybe_gap();
        self.push("{");
        body(self);
        self.item_gap();
        self.push("}");
    }

    fn file(&mut self, file: &File) {
        if self.roll(2) == 0 {
            self.item_gap();
        }
        for item in &file.items {
            match item {
                Item::Customer(c) => {
                    self.push("customer");
                    self.block(|m| m.fields(&c.traits));
                }
                Item::Event(e) => {
                    self.push("event");
                    self.gap();
                    self.push(&e.name.name);
                    self.gap();
                    self.quote(&e.source.value);
                    if e.catalog {
                        self.gap();
                        self.push("catalog");
                    }
                    if e.has_block {
                        self.block(|m| m.fields(&e.fields));
                    }
                }
                Item::Defaults(d) => {
                    self.push("defaults");
                    self.block(|m| {
                        for item in &d.items {
                            m.item_gap();
                            match item {
                                DefaultItem::Timezone { zone, .. } => {
                                    m.push("timezone");
                                    m.gap();
                                    m.quote(&zone.value);
                                }
                                DefaultItem::Cap { count, per, .. } => {
                                    m.push(&format!("cap {count}"));
                                    m.gap();
                                    m.push("per customer per");
                                    m.gap();
                                    m.duration(per);
                                }
                                DefaultItem::Consent {
                                    channel, requires, ..
                                } => {
                                    m.push("consent");
                                    m.gap();
                                    m.push(&channel.name);
                                    m.gap();
                                    m.push("requires");
                                    m.gap();
                                    m.top_expr(requires);
                                }
                            }
                        }
                    });
                }
                Item::Moment(moment) => {
                    self.push("moment");
                    self.gap();
                    self.push(&moment.id.name);
                    self.gap();
                    self.quote(&moment.title.value);
                    self.block(|m| {
                        for item in &moment.items {
                            m.item_gap();
                            m.moment_item(item);
                        }
                    });
                }
            }
            self.item_gap();
        }
    }

    fn moment_item(&mut self, item: &MomentItem) {
        match item {
            MomentItem::Trigger(t) => {
                self.push("trigger");
                self.block(|m| {
                    for clause in &t.clauses {
                        m.item_gap();
                        m.clause(clause);
                    }
                });
            }
            MomentItem::Message(message) => {
                self.push("message");
                self.gap();
                self.push(&message.channel.name);
                self.block(|m| {
                    for field in &message.fields {
                        m.item_gap();
                        m.push(&field.name.name);
                        m.gap();
                        m.str_lit(&field.template);
                    }
                });
            }
            MomentItem::Kpi(kpi) => {
                self.push("kpi");
                self.gap();
                self.quote(&kpi.title.value);
                self.gap();
                self.push("=");
                self.gap();
                self.top_expr(&kpi.measure);
                if let Some(goal) = &kpi.goal {
                    self.item_gap();
                    self.push("goal");
                    self.gap();
                    self.push(goal.op.symbol());
                    self.gap();
                    self.top_expr(&goal.target);
                }
            }
            MomentItem::Limit { count, per, .. } => {
                self.push(&format!("limit {count}"));
                self.gap();
                self.push("per");
                self.gap();
                self.push("customer");
                if let Some(per) = per {
                    self.gap();
                    self.push("per");
                    self.gap();
                    self.duration(per);
                }
            }
            MomentItem::QuietHours { from, to, .. } => {
                self.push("quiet hours");
                self.gap();
                self.time(from);
                self.gap();
                self.push("to");
                self.gap();
                self.time(to);
            }
            MomentItem::Holdout { percent, .. } => {
                self.push("holdout");
                self.gap();
                self.number(*percent);
                self.push("%");
            }
            MomentItem::Active { from, until, .. } => {
                self.push("active from");
                self.gap();
                self.push(&from.value.format("%Y-%m-%d").to_string());
                if let Some(until) = until {
                    self.gap();
                    self.push("until");
                    self.gap();
                    self.push(&until.value.format("%Y-%m-%d").to_string());
                }
            }
            MomentItem::Priority { value, .. } => {
                self.push("priority");
                self.gap();
                self.push(&value.to_string());
            }
        }
    }

    fn clause(&mut self, clause: &TriggerClause) {
        match clause {
            TriggerClause::On(TriggerSource::Event { event, .. }) => {
                self.push("on");
                self.gap();
                self.push(&event.name);
            }
            TriggerClause::On(TriggerSource::Anniversary { date, at, .. }) => {
                self.push("on");
                self.gap();
                self.push("anniversary");
                self.gap();
                self.push("of");
                self.gap();
                self.path(date);
                self.gap();
                self.push("at");
                self.gap();
                self.time(at);
            }
            TriggerClause::On(TriggerSource::Offset {
                offset,
                direction,
                date,
                at,
                ..
            }) => {
                self.push("on");
                self.gap();
                self.duration(offset);
                self.gap();
                self.push(match direction {
                    Direction::Before => "before",
                    Direction::After => "after",
                });
                self.gap();
                self.path(date);
                self.gap();
                self.push("at");
                self.gap();
                self.time(at);
            }
            TriggerClause::On(TriggerSource::Every { cron, zone, .. }) => {
                self.push("every");
                self.gap();
                self.quote(&cron.value);
                if let Some(zone) = zone {
                    self.gap();
                    self.push("in");
                    self.gap();
                    self.quote(&zone.value);
                }
            }
            TriggerClause::Let { name, value, .. } => {
                self.push("let");
                self.gap();
                self.push(&name.name);
                self.gap();
                self.push("=");
                self.gap();
                self.top_expr(value);
            }
            TriggerClause::Where { condition, .. } => {
                self.push("where");
                self.gap();
                self.top_expr(condition);
            }
            TriggerClause::Unless {
                event,
                condition,
                within,
                ..
            } => {
                self.push("unless");
                self.gap();
                self.push(&event.name);
                if let Some(condition) = condition {
                    self.gap();
                    self.push("where");
                    self.gap();
                    self.top_expr(condition);
                }
                if let Some(within) = within {
                    self.gap();
                    self.push("within");
                    self.gap();
                    self.duration(within);
                }
            }
            TriggerClause::Wait { delay, .. } => {
                self.push("wait");
                self.gap();
                self.duration(delay);
            }
        }
    }
}

proptest! {
    // 64 cases keep the suite quick; `FORMAT_CASES=5000 cargo test --test format` digs deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("FORMAT_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// A tree printed by the formatter parses back to itself, and the text is canonical.
    #[test]
    fn printed_trees_read_back(file in file()) {
        let parsed = Parsed {
            file: file.clone(),
            comments: Vec::new(),
            diagnostics: Vec::new(),
            incomplete: false,
        };
        let text = format_parsed(&parsed, "");
        let back = parse_text(&text);
        prop_assert!(back.diagnostics.is_empty(), "{:?}\n{}", back.diagnostics, text);
        prop_assert_eq!(&back.file, &file, "{}", text);
        prop_assert_eq!(format_text(&text).ok(), Some(text.clone()));
    }

    /// The same trees written carelessly, with comments anywhere: the formatter keeps
    /// the tree and every comment, and its output is a fixed point.
    #[test]
    fn messy_programs_format_soundly(file in file(), seed in any::<u64>()) {
        let mut messy = Messy::new(seed);
        messy.file(&file);
        let text = messy.out;
        let parsed = parse_text(&text);
        prop_assert!(parsed.diagnostics.is_empty(), "{:?}\n{}", parsed.diagnostics, text);
        prop_assert_eq!(&parsed.file, &file, "the generator wrote something else:\n{}", text);
        let formatted = match format_text(&text) {
            Ok(formatted) => formatted,
            Err(error) => return Err(TestCaseError::fail(format!("{error}\n--- input:\n{text}"))),
        };
        let back = parse_text(&formatted);
        prop_assert!(back.diagnostics.is_empty());
        prop_assert_eq!(&back.file, &file);
        prop_assert_eq!(comment_texts(&back), comment_texts(&parsed));
        prop_assert_eq!(format_text(&formatted).ok(), Some(formatted.clone()));
        for line in formatted.lines() {
            let indent = line.len() - line.trim_start_matches(' ').len();
            prop_assert!(indent % 2 == 0, "odd indentation: {:?}", line);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (4) The corpus: good files as written, and their canonical form as snapshots

#[test]
fn corpus_files_format_to_their_snapshots() {
    insta::glob!("fmt/*.moment", |path| {
        let text = std::fs::read_to_string(path).expect("readable corpus file");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let formatted = assert_sound(&name, &text);
        insta::assert_snapshot!(formatted);
    });
}
