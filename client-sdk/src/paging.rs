//! Following `next_page_token` until the last page, written once for every list RPC.

use std::future::Future;

use futures_util::Stream;
use futures_util::stream;

use crate::error::{Error, Result};

/// Where a paged listing stands between items.
struct Pager<F, T> {
    /// Fetches one page given its token; returns the page's items and the next token.
    fetch: F,
    /// Items of the current page not yet yielded.
    buffered: std::vec::IntoIter<T>,
    /// Token of the page to fetch when `buffered` runs dry; `None` once the last page was read
    /// (or a fetch failed, which ends the listing).
    next_token: Option<String>,
}

/// Yields every item of every page, starting at `first_token` (empty for the first page), until
/// a page comes back with an empty `next_page_token`. A failed fetch is yielded and ends the
/// stream.
pub(crate) fn pages<F, Fut, T>(first_token: String, fetch: F) -> impl Stream<Item = Result<T>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String)>>,
{
    let pager = Pager {
        fetch,
        buffered: Vec::new().into_iter(),
        next_token: Some(first_token),
    };
    stream::unfold(pager, |mut pager| async move {
        loop {
            if let Some(item) = pager.buffered.next() {
                return Some((Ok(item), pager));
            }
            let token = pager.next_token.take()?;
            match (pager.fetch)(token.clone()).await {
                Ok((items, next)) => {
                    // A server that hands back the token it was given would loop forever.
                    if !next.is_empty() && next == token {
                        return Some((Err(Error::missing("a new next_page_token")), pager));
                    }
                    pager.buffered = items.into_iter();
                    pager.next_token = (!next.is_empty()).then_some(next);
                }
                Err(error) => return Some((Err(error), pager)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::{Arc, Mutex};
    use tonic::Code;

    /// Pages `["a","b"]`, `[]`, `["c"]` keyed by tokens "", "1", "2".
    fn three_pages(
        seen: Arc<Mutex<Vec<String>>>,
    ) -> impl Fn(String) -> std::future::Ready<Result<(Vec<&'static str>, String)>> {
        move |token: String| {
            seen.lock().expect("not poisoned").push(token.clone());
            std::future::ready(match token.as_str() {
                "" => Ok((vec!["a", "b"], "1".to_owned())),
                // An empty page that is not the last must not end the listing.
                "1" => Ok((vec![], "2".to_owned())),
                "2" => Ok((vec!["c"], String::new())),
                _ => Err(tonic::Status::invalid_argument("bad token").into()),
            })
        }
    }

    #[tokio::test]
    async fn follows_tokens_until_an_empty_one() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<_> = pages(String::new(), three_pages(seen.clone()))
            .collect()
            .await;
        let items: Vec<_> = items.into_iter().map(|r| r.expect("no error")).collect();
        assert_eq!(items, ["a", "b", "c"]);
        assert_eq!(*seen.lock().expect("not poisoned"), ["", "1", "2"]);
    }

    #[tokio::test]
    async fn a_failed_page_is_the_last_item() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<_> = pages("bogus".to_owned(), three_pages(seen)).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().err().and_then(Error::code),
            Some(Code::InvalidArgument)
        );
    }

    #[tokio::test]
    async fn a_repeated_token_ends_the_listing() {
        let items: Vec<_> = pages(String::new(), |_token: String| {
            std::future::ready(Ok((vec![1], "same".to_owned())))
        })
        .collect()
        .await;
        // The first page; the second (asked for with "same") answers "same" again: an error.
        assert!(matches!(items[..], [Ok(1), Err(_)]), "{items:?}");
    }
}
