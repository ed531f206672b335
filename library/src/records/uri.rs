//! How a URI is shown and recorded: without its credentials.

/// A URI as ops shows and records it: credentials in it (`user:pass@`)
/// become `***@`, the value of every query parameter `***` (presigned
/// URLs carry their token there), and a fragment `#***`. Any scheme, in
/// any case, and a malformed `scheme:/user:pass@host` too: a text that
/// only looks like a URI is shown the same way. The download itself uses
/// the URI as given; only this form appears in messages, results and
/// records.
pub fn redact(uri: &str) -> std::borrow::Cow<'_, str> {
    // Whatever comes before a `scheme://` (a space, a quote) is kept as it
    // is, and the URI after it shown as below.
    let trimmed = uri.trim_start();
    if trimmed.len() < uri.len() {
        let blank = &uri[..uri.len() - trimmed.len()];
        return format!("{blank}{}", redact(trimmed)).into();
    }
    if let Some(at) = uri.find("://").or_else(|| uri.find(':')) {
        let start = uri[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        if start > 0 {
            return format!("{}{}", &uri[..start], redact(&uri[start..])).into();
        }
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return uri.into();
    };
    // An empty scheme before `//` is what is left of one in other letters
    // (`café://`): its authority is still hidden.
    let is_scheme = (scheme.is_empty() && rest.starts_with("//"))
        || (scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')));
    if !is_scheme {
        return uri.into();
    }
    let slashes = rest.len() - rest.trim_start_matches('/').len();
    let (slashes, rest) = rest.split_at(slashes);
    // Credentials end at the last `@` before the host: a password may hold
    // `/`, `?`, `#` or `@` as given, unencoded, and must not show then.
    let credentials = userinfo_end(rest);
    let rest = credentials.map_or(rest, |end| &rest[end + 1..]);
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let authority_end = before_fragment
        .find(['/', '?'])
        .unwrap_or(before_fragment.len());
    let (authority, tail) = before_fragment.split_at(authority_end);
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if credentials.is_none() && query.is_none() && !fragment.is_some_and(|f| !f.is_empty()) {
        return uri.into();
    }
    let mut shown = format!("{scheme}:{slashes}");
    if credentials.is_some() {
        shown.push_str("***@");
    }
    shown.push_str(authority);
    shown.push_str(path);
    if let Some(query) = query {
        let hidden: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&hidden.join("&"));
    }
    if fragment.is_some_and(|f| !f.is_empty()) {
        shown.push_str("#***");
    }
    shown.into()
}

/// Where the credentials of a URI's authority end (the `@` before its
/// host), in `rest` (what follows `scheme://`). A first `@` before any
/// `/`, `?` or `#` begins the host; one after such a character still does
/// when a `:` came before it that is not a port's (`user:pa/ss@host`), but
/// not in a path (`host/a@b`, `host:8080/a@b`).
fn userinfo_end(rest: &str) -> Option<usize> {
    let first = rest.find('@')?;
    let before = &rest[..first];
    let head = before.split(['/', '?', '#']).next().unwrap_or_default();
    let plain = head.len() == before.len();
    let port = head
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !plain && (!head.contains(':') || port) {
        return None;
    }
    let host_len = rest[first + 1..]
        .find(['/', '?', '#'])
        .unwrap_or(rest.len() - first - 1);
    rest[..first + 1 + host_len].rfind('@')
}
