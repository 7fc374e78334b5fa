//! [`LiveReloadLayer`]: puts devsup's live-reload script into HTML pages
//! when devsup runs with `--livereload`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::BoxError;

/// A tower layer that injects devsup's live-reload script tag into HTML
/// responses, so that the browser reloads the page once a new generation is
/// ready (and shows build errors), when devsup runs with `--livereload`.
///
/// It reads [`devsup_protocol::LIVERELOAD_ENV`] when made: without it (not
/// under devsup, or devsup without `--livereload`) the layer passes every
/// response through untouched. With it, a `text/html` response that is not
/// compressed is read whole and gets
/// `<script src="URL/devsup-livereload.js" defer></script>` before its last
/// `</body>` (or at its end), with `Content-Length` fixed. Responses that
/// have no body are left alone: to `HEAD` (whose `Content-Length` is the
/// `GET`'s), and `1xx`, `204` and `304`.
///
/// ```
/// use axum::{Router, response::Html, routing::get};
/// use devsup_serve::LiveReloadLayer;
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { Html("<body>hi</body>") }))
///     .layer(LiveReloadLayer::from_env());
/// ```
///
/// A server without tower puts
/// [`devsup_protocol::livereload_script_tag`] into its pages itself.
#[derive(Debug, Clone)]
pub struct LiveReloadLayer {
    tag: Option<Arc<str>>,
}

impl LiveReloadLayer {
    /// Injects the script if devsup set [`devsup_protocol::LIVERELOAD_ENV`];
    /// does nothing otherwise.
    pub fn from_env() -> LiveReloadLayer {
        LiveReloadLayer {
            tag: devsup_protocol::livereload_script_tag().map(Arc::from),
        }
    }

    /// Injects the script of the live-reload endpoint at `base_url` (such
    /// as `http://127.0.0.1:35729`), or does nothing for `None`.
    pub fn new(base_url: Option<&str>) -> LiveReloadLayer {
        LiveReloadLayer {
            tag: base_url.map(|url| Arc::from(devsup_protocol::script_tag(url))),
        }
    }
}

impl<S> tower::Layer<S> for LiveReloadLayer {
    type Service = LiveReload<S>;

    fn layer(&self, inner: S) -> LiveReload<S> {
        LiveReload {
            inner,
            tag: self.tag.clone(),
        }
    }
}

/// The service [`LiveReloadLayer`] makes.
#[derive(Debug, Clone)]
pub struct LiveReload<S> {
    inner: S,
    tag: Option<Arc<str>>,
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for LiveReload<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<LiveReloadBody<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let head = request.method() == Method::HEAD;
        let response = self.inner.call(request);
        let tag = self.tag.clone();
        Box::pin(async move {
            let response = response.await?;
            let Some(tag) = tag.filter(|_| !head && injectable(&response)) else {
                return Ok(response.map(|body| LiveReloadBody(Inner::Passthrough(Box::pin(body)))));
            };
            let (mut parts, body) = response.into_parts();
            let html = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => {
                    let body = LiveReloadBody(Inner::Failed(Some(err.into())));
                    return Ok(Response::from_parts(parts, body));
                }
            };
            let html = inject(&html, tag.as_bytes());
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(html.len()));
            let body = LiveReloadBody(Inner::Injected(Some(html)));
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// An uncompressed HTML response with a body (not `1xx`, `204` or `304`).
fn injectable<B>(response: &Response<B>) -> bool {
    let status = response.status();
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    let html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let encoded = response
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    html && !encoded
}

/// `html` with `tag` before its last `</body>` (any case), or at its end.
fn inject(html: &[u8], tag: &[u8]) -> Bytes {
    let at = html
        .windows(7)
        .rposition(|w| w.eq_ignore_ascii_case(b"</body>"))
        .unwrap_or(html.len());
    let mut out = BytesMut::with_capacity(html.len() + tag.len());
    out.extend_from_slice(&html[..at]);
    out.extend_from_slice(tag);
    out.extend_from_slice(&html[at..]);
    out.freeze()
}

/// The body of a [`LiveReload`] response: the original one, or the page
/// with the script in it.
pub struct LiveReloadBody<B>(Inner<B>);

enum Inner<B> {
    Passthrough(Pin<Box<B>>),
    Injected(Option<Bytes>),
    Failed(Option<BoxError>),
}

impl<B> std::fmt::Debug for LiveReloadBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.0 {
            Inner::Passthrough(_) => "Passthrough",
            Inner::Injected(_) => "Injected",
            Inner::Failed(_) => "Failed",
        };
        f.debug_tuple("LiveReloadBody").field(&what).finish()
    }
}

impl<B> Body for LiveReloadBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Passthrough(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
            Inner::Injected(html) => Poll::Ready(html.take().map(|html| Ok(Frame::data(html)))),
            Inner::Failed(err) => Poll::Ready(err.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Passthrough(body) => body.is_end_stream(),
            Inner::Injected(html) => html.is_none(),
            Inner::Failed(err) => err.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Passthrough(body) => body.size_hint(),
            Inner::Injected(html) => {
                SizeHint::with_exact(html.as_ref().map_or(0, |h| h.len() as u64))
            }
            Inner::Failed(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tower::{Layer, Service};

    const TAG: &str =
        r#"<script src="http://127.0.0.1:35729/devsup-livereload.js" defer></script>"#;

    /// Runs one request through the layer over a service answering
    /// `content_type` and `body` (and `extra` headers).
    async fn through(
        layer: LiveReloadLayer,
        content_type: &'static str,
        extra: &[(&'static str, &'static str)],
        body: &'static str,
    ) -> (hyper::HeaderMap, String) {
        let request = Request::new(());
        through_as(layer, request, StatusCode::OK, content_type, extra, body).await
    }

    /// [`through`] for `request`, answered with `status`.
    async fn through_as(
        layer: LiveReloadLayer,
        request: Request<()>,
        status: StatusCode,
        content_type: &'static str,
        extra: &[(&'static str, &'static str)],
        body: &'static str,
    ) -> (hyper::HeaderMap, String) {
        let extra: Vec<_> = extra.to_vec();
        let inner = tower::service_fn(move |_req: Request<()>| {
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            for (name, value) in &extra {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        let response = layer.layer(inner).call(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn on() -> LiveReloadLayer {
        LiveReloadLayer::new(Some("http://127.0.0.1:35729"))
    }

    #[tokio::test]
    async fn injects_before_body_end_and_fixes_the_length() {
        let page = "<html><body><h1>hi</h1></body></html>";
        let (headers, body) = through(on(), "text/html; charset=utf-8", &[], page).await;
        assert_eq!(body, format!("<html><body><h1>hi</h1>{TAG}</body></html>"));
        assert_eq!(headers[CONTENT_LENGTH], body.len().to_string());
    }

    #[tokio::test]
    async fn uses_the_last_body_end_in_any_case() {
        let page = "<body><pre>&lt;/body&gt; </body></pre></BODY>\n";
        let (_, body) = through(on(), "TEXT/HTML", &[], page).await;
        assert_eq!(
            body,
            format!("<body><pre>&lt;/body&gt; </body></pre>{TAG}</BODY>\n")
        );
    }

    #[tokio::test]
    async fn appends_without_a_body_end() {
        let (headers, body) = through(on(), "text/html", &[], "<p>fragment").await;
        assert_eq!(body, format!("<p>fragment{TAG}"));
        assert_eq!(headers[CONTENT_LENGTH], body.len().to_string());
    }

    #[tokio::test]
    async fn leaves_other_responses_alone() {
        let (headers, body) = through(on(), "application/json", &[], "{\"a\":1}").await;
        assert_eq!(
            (headers[CONTENT_LENGTH].to_str().unwrap(), body.as_str()),
            ("7", "{\"a\":1}")
        );
        let gzip = [("content-encoding", "gzip")];
        let (_, body) = through(on(), "text/html", &gzip, "</body>").await;
        assert_eq!(body, "</body>");
    }

    #[tokio::test]
    async fn does_nothing_without_devsup_livereload() {
        let page = "<html><body></body></html>";
        let (headers, body) = through(LiveReloadLayer::new(None), "text/html", &[], page).await;
        assert_eq!(body, page);
        assert_eq!(headers[CONTENT_LENGTH], page.len().to_string());
    }

    #[tokio::test]
    async fn a_head_response_keeps_its_length_and_gets_no_script() {
        // The length of the page a GET would get, and no body.
        let request = Request::head("/").body(()).unwrap();
        let length = [("content-length", "38")];
        let (headers, body) =
            through_as(on(), request, StatusCode::OK, "text/html", &length, "").await;
        assert_eq!(body, "");
        assert_eq!(headers[CONTENT_LENGTH], "38");
    }

    #[tokio::test]
    async fn bodiless_statuses_get_no_script() {
        for status in [
            StatusCode::CONTINUE,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
        ] {
            let request = Request::new(());
            let (headers, body) = through_as(on(), request, status, "text/html", &[], "").await;
            assert_eq!(body, "", "{status}");
            assert_eq!(headers[CONTENT_LENGTH], "0", "{status}");
        }
        // A page with another status still gets it.
        let request = Request::new(());
        let (_, body) = through_as(
            on(),
            request,
            StatusCode::NOT_FOUND,
            "text/html",
            &[],
            "<body></body>",
        )
        .await;
        assert_eq!(body, format!("<body>{TAG}</body>"));
    }
}
