//! Property tests: the message parser never panics, whatever bytes a
//! server (or anything else that can write to its channel) sends, and a
//! message it accepts formats back to itself.

use proptest::prelude::*;

use crate::{MAX_LINE, Message, ParseError, format, parse, parse_line};

/// Lines that look like messages, so that the key and value checks are
/// reached and not only the "no `=`" branch.
fn message_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just("READY".to_owned()),
            Just("MAINPID".to_owned()),
            Just("STATUS".to_owned()),
            Just("DEVSUP_RELOAD".to_owned()),
            Just("STOPPING".to_owned()),
            "[A-Za-z0-9_ ]{0,12}",
        ],
        prop_oneof![Just("1".to_owned()), "[0-9+-]{0,25}", any::<String>()],
        prop_oneof![Just(""), Just("\r"), Just("\n"), Just("\r\n")],
    )
        .prop_map(|(k, v, end)| format!("{k}={v}{end}").into_bytes())
}

proptest! {
    #[test]
    fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
        let _ = parse_line(&bytes);
    }

    #[test]
    fn accepted_messages_format_back_to_themselves(line in message_like()) {
        for message in parse(&line).into_iter().flatten() {
            let again = parse(format(std::slice::from_ref(&message)).as_bytes());
            prop_assert_eq!(again, vec![Ok(message)]);
        }
    }

    #[test]
    fn a_line_over_the_limit_is_refused_whole(extra in 1usize..64, byte in any::<u8>()) {
        let line = vec![byte; MAX_LINE + extra];
        prop_assert_eq!(parse_line(&line), Some(Err(ParseError::TooLong(MAX_LINE + extra))));
    }

    #[test]
    fn any_status_text_survives_formatting(text in any::<String>()) {
        let sent = format(&[Message::Status(text.clone())]);
        let got = parse(sent.as_bytes());
        prop_assert_eq!(got.len(), 1);
        if let Ok(Message::Status(s)) = &got[0] {
            // Newlines become spaces (one message is one line); a trailing
            // carriage return is taken for a CRLF line ending.
            let expected = text.replace('\n', " ");
            prop_assert_eq!(s.as_str(), expected.trim_end_matches('\r'));
        } else if sent.len() <= MAX_LINE {
            prop_assert!(false, "{:?} parsed as {:?}", sent, got);
        }
    }
}
