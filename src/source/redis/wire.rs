//! The text lines of Synapse's replication channel, parsed (pure, never
//! panics on any input).
//!
//! Every message on the channel is one command: `NAME rest`. roomcache
//! uses two of them:
//!
//! * `RDATA <stream> <instance> <token|batch> <json row>`: a row `instance`
//!   wrote to `stream`. Rows sharing a position are sent as several lines,
//!   all but the last with `batch`; the numbered line tells that the
//!   instance has published (so committed) every row of its up to `token`.
//! * `POSITION <stream> <instance> <previous> <new>`: the instance's
//!   position in `stream` is `new`, with no rows of its in
//!   `(previous, new]` (an idle writer's way of moving forward; also every
//!   process's answer to `REPLICATE`).
//!
//! Every other command Synapse sends is recognised and ignored; anything
//! else is an [`WireError`]. An RDATA line's row is kept as text: whether it
//! parses as Synapse parses rows of its stream is [`super::rows`]' question,
//! asked only of the streams roomcache follows. Owns: that parsing. May not
//! touch: the network, positions, anything async.

use crate::source::rejected::truncated;

/// A command of the replication channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command<'line> {
    /// A row; its values are not used (the database is the source of
    /// values), but it must parse as Synapse parses its stream's rows.
    Rdata {
        stream: &'line str,
        instance: &'line str,
        token: RowToken,
        /// The row's JSON, as sent.
        row: &'line str,
    },
    Position {
        stream: &'line str,
        instance: &'line str,
        previous: i64,
        new: i64,
    },
    /// One of Synapse's other commands (named), ignored.
    Other(&'line str),
}

/// An RDATA line's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowToken {
    /// The row belongs with the next numbered line of its stream and instance.
    Batch,
    Position(i64),
}

/// Why a line is not a command roomcache can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the line is not UTF-8")]
    NotText,
    #[error("the line is empty")]
    Empty,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("{command} lacks its {field}")]
    Missing {
        command: &'static str,
        field: &'static str,
    },
    #[error("{command} has an invalid {field} {value:?}")]
    Invalid {
        command: &'static str,
        field: &'static str,
        value: String,
    },
}

/// The commands Synapse sends besides RDATA and POSITION (ignored).
const OTHER_COMMANDS: [&str; 13] = [
    "SERVER",
    "ERROR",
    "PING",
    "NAME",
    "REPLICATE",
    "USER_SYNC",
    "CLEAR_USER_SYNC",
    "FEDERATION_ACK",
    "USER_IP",
    "REMOTE_SERVER_UP",
    "LOCK_RELEASED",
    "NEW_ACTIVE_TASK",
    "CANCEL_TASK",
];

/// Parses one message of the channel.
pub(crate) fn parse(message: &[u8]) -> Result<Command<'_>, WireError> {
    let line = std::str::from_utf8(message).map_err(|_| WireError::NotText)?;
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
    match name {
        "" => Err(WireError::Empty),
        "RDATA" => rdata(rest),
        "POSITION" => position(rest),
        other if OTHER_COMMANDS.contains(&other) => Ok(Command::Other(other)),
        other => Err(WireError::UnknownCommand(truncated(other))),
    }
}

/// The next space-separated field of `rest`, or `Missing`.
fn field<'line>(
    rest: &mut &'line str,
    command: &'static str,
    name: &'static str,
) -> Result<&'line str, WireError> {
    let (value, after) = rest.split_once(' ').unwrap_or((rest, ""));
    if value.is_empty() {
        return Err(WireError::Missing {
            command,
            field: name,
        });
    }
    *rest = after;
    Ok(value)
}

fn number(value: &str, command: &'static str, name: &'static str) -> Result<i64, WireError> {
    value.parse().map_err(|_| WireError::Invalid {
        command,
        field: name,
        value: truncated(value),
    })
}

/// `<stream> <instance> <token|batch> <json>`: split on the first three
/// spaces (the JSON row may hold spaces of its own).
fn rdata(mut rest: &str) -> Result<Command<'_>, WireError> {
    const COMMAND: &str = "RDATA";
    let stream = field(&mut rest, COMMAND, "stream")?;
    let instance = field(&mut rest, COMMAND, "instance")?;
    let token = match field(&mut rest, COMMAND, "token")? {
        "batch" => RowToken::Batch,
        value => RowToken::Position(number(value, COMMAND, "token")?),
    };
    if rest.is_empty() {
        return Err(WireError::Missing {
            command: COMMAND,
            field: "row",
        });
    }
    Ok(Command::Rdata {
        stream,
        instance,
        token,
        row: rest,
    })
}

/// `<stream> <instance> <previous> <new>`.
fn position(mut rest: &str) -> Result<Command<'_>, WireError> {
    const COMMAND: &str = "POSITION";
    let stream = field(&mut rest, COMMAND, "stream")?;
    let instance = field(&mut rest, COMMAND, "instance")?;
    let previous = number(
        field(&mut rest, COMMAND, "previous token")?,
        COMMAND,
        "previous token",
    )?;
    let new = number(
        field(&mut rest, COMMAND, "new token")?,
        COMMAND,
        "new token",
    )?;
    if !rest.is_empty() {
        return Err(WireError::Invalid {
            command: COMMAND,
            field: "end",
            value: truncated(rest),
        });
    }
    Ok(Command::Position {
        stream,
        instance,
        previous,
        new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdata_lines_as_synapse_sends_them() {
        let line = br#"RDATA events p2 batch ["ev",["$a","!r:hs","m.room.create","",null,null,null,false,false]]"#;
        assert_eq!(
            parse(line),
            Ok(Command::Rdata {
                stream: "events",
                instance: "p2",
                token: RowToken::Batch,
                row: r#"["ev",["$a","!r:hs","m.room.create","",null,null,null,false,false]]"#,
            })
        );
        let line = br#"RDATA events p2 2 ["state",["!r:hs","m.room.create","","$a"]]"#;
        assert_eq!(
            parse(line),
            Ok(Command::Rdata {
                stream: "events",
                instance: "p2",
                token: RowToken::Position(2),
                row: r#"["state",["!r:hs","m.room.create","","$a"]]"#,
            })
        );
        // The JSON row may hold spaces: only the first three split.
        let line = br#"RDATA caches master 17 ["did_forget", ["@bob:hs", "!r:hs"], 1795791238583]"#;
        assert_eq!(
            parse(line),
            Ok(Command::Rdata {
                stream: "caches",
                instance: "master",
                token: RowToken::Position(17),
                row: r#"["did_forget", ["@bob:hs", "!r:hs"], 1795791238583]"#,
            })
        );
    }

    #[test]
    fn position_lines_and_other_commands() {
        assert_eq!(
            parse(b"POSITION events p1 2 3"),
            Ok(Command::Position {
                stream: "events",
                instance: "p1",
                previous: 2,
                new: 3
            })
        );
        for line in [
            "REPLICATE",
            "LOCK_RELEASED master some_lock key",
            "USER_IP x",
            "PING 123",
        ] {
            assert!(
                matches!(parse(line.as_bytes()), Ok(Command::Other(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn malformed_and_unknown_lines_are_errors_never_panics() {
        assert_eq!(parse(b""), Err(WireError::Empty));
        assert_eq!(parse(b" RDATA"), Err(WireError::Empty));
        assert_eq!(parse(&[0xff, 0xfe]), Err(WireError::NotText));
        assert_eq!(
            parse(b"HELLO world"),
            Err(WireError::UnknownCommand("HELLO".into()))
        );
        assert_eq!(
            parse(b"RDATA events p1 7"),
            Err(WireError::Missing {
                command: "RDATA",
                field: "row"
            })
        );
        assert_eq!(
            parse(b"RDATA events"),
            Err(WireError::Missing {
                command: "RDATA",
                field: "instance"
            })
        );
        assert!(matches!(
            parse(b"RDATA events p1 x7 []"),
            Err(WireError::Invalid { field: "token", .. })
        ));
        assert!(matches!(
            parse(b"POSITION events p1 2"),
            Err(WireError::Missing {
                field: "new token",
                ..
            })
        ));
        assert!(matches!(
            parse(b"POSITION events p1 2 99999999999999999999"),
            Err(WireError::Invalid { .. })
        ));
        assert!(matches!(
            parse(b"POSITION events p1 2 3 4"),
            Err(WireError::Invalid { field: "end", .. })
        ));
        assert!(matches!(
            parse(b"POSITION  p1 2 3"),
            Err(WireError::Missing {
                field: "stream",
                ..
            })
        ));
    }

    #[test]
    fn no_input_makes_it_panic() {
        // Every prefix of real lines, and every short byte string over a
        // small alphabet, parses to a value or an error.
        let lines = [
            &br#"RDATA events p2 2 ["state",["!r:hs","m.room.create","","$a"]]"#[..],
            b"POSITION events p1 2 3",
            "RDATA caches m\u{e9}ster 17 []".as_bytes(),
        ];
        for line in lines {
            for end in 0..=line.len() {
                let _ = parse(&line[..end]);
            }
        }
        let alphabet = [b'R', b'D', b' ', b'1', b'-', 0xc3, b'\n'];
        let mut input = Vec::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    input.clear();
                    input.extend_from_slice(b"POSITION ");
                    input.extend_from_slice(&[a, b, c, a]);
                    let _ = parse(&input);
                    let _ = parse(&input[9..]);
                }
            }
        }
        assert_eq!(truncated(&"\u{e9}".repeat(40)).len(), 64);
    }
}
