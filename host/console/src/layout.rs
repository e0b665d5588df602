//! The frame every console page shares, the small pieces pages repeat, and
//! the two embedded assets.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::SignedIn;

/// The style sheet: light and dark themes through `prefers-color-scheme`.
const STYLE_SHEET: &str = include_str!("assets/console.css");
/// The one script: the copy button. Everything else works without it.
const SCRIPT: &str = include_str!("assets/console.js");
/// The icon. Browsers ask for one on every page; without it, they would
/// ask the admin API for `/favicon.ico`, and each such ask would count as a
/// failed authentication of the admin's address.
const ICON: &str = include_str!("assets/icon.svg");

pub(super) async fn style_sheet() -> Response {
    asset("text/css; charset=utf-8", STYLE_SHEET)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Where a page sits in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    None,
    Apps,
    Audit,
    Policy,
    Fleet,
    Try,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Apps, "/", "Apps"),
    (Nav::Audit, "/audit", "Audit trail"),
    (Nav::Policy, "/policy", "Live policy"),
    (Nav::Fleet, "/fleet", "Fleet"),
    (Nav::Try, "/try", "Try a request"),
];

/// A whole page: header, navigation (when signed in), and `body` under an
/// `h1` of `title`.
pub(super) fn page(title: &str, at: Nav, signed_in: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · keyscope" }
                link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "keyscope" }
                    @if let Some(signed_in) = signed_in {
                        nav aria-label="Console" {
                            ul {
                                @for (nav, href, label) in NAV.into_iter().filter(|(nav, ..)| {
                                    // The platform's pages are for roles over every app.
                                    !matches!(nav, Nav::Policy | Nav::Fleet)
                                        || signed_in.actor.role.apps().is_none()
                                }) {
                                    li {
                                        a href=(href) aria-current=[(nav == at).then_some("page")] {
                                            (label)
                                        }
                                    }
                                }
                            }
                        }
                        form.sign-out method="post" action="/sign-out" {
                            (csrf(signed_in))
                            span.who {
                                "Signed in as " strong { (who(signed_in)) }
                                " · " span.role { (signed_in.actor.role.noun().trim_start_matches("an ")) }
                            }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The admin's name, without the `admin:` or `oidc:` of the audit trail.
fn who(signed_in: &SignedIn) -> &str {
    let name = &signed_in.actor.name;
    name.strip_prefix("admin:")
        .or_else(|| name.strip_prefix("oidc:"))
        .unwrap_or(name)
}

/// The hidden CSRF field every form of a session carries.
pub(super) fn csrf(signed_in: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed_in.csrf); }
}

/// An error, in words, announced to screen readers.
pub(super) fn error_box(message: &str) -> Markup {
    html! { p.error role="alert" { (message) } }
}

/// A notice that something worked.
pub(super) fn done_box(message: &str) -> Markup {
    html! { p.done role="status" { (message) } }
}

/// An RFC 3339 time as people read it: `2026-11-27 13:05 UTC`.
pub(super) fn when(rfc3339: &str) -> Markup {
    let shown = match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) if rfc3339.ends_with('Z') => format!("{date} {time} UTC"),
        _ => rfc3339.to_owned(),
    };
    html! { time datetime=(rfc3339) { (shown) } }
}

/// A millisecond Unix time, as [`when`] shows it.
pub(super) fn when_ms(ms: u64) -> Markup {
    when(&keyscope_store::audit::timestamp(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates_in_utc() {
        assert_eq!(
            when("2026-11-27T13:05:09.123Z").into_string(),
            r#"<time datetime="2026-11-27T13:05:09.123Z">2026-11-27 13:05 UTC</time>"#
        );
        assert_eq!(
            when("yesterday").into_string(),
            r#"<time datetime="yesterday">yesterday</time>"#
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            error_box("<script>alert(1)</script> & \"x\"").into_string(),
            r#"<p class="error" role="alert">&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;</p>"#
        );
    }
}
