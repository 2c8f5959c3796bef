//! The Responses API passed through to a provider that speaks it
//! (`serves = ["responses"]`): the client's body goes to
//! `{base_url}/responses` with this upstream's model, and the answer comes
//! back as sent — the object, or each event's payload.

use super::{Inner, MAX_BODY, body_stream, invalid};
use crate::domain::Failure;
use crate::upstream::sse::SseParser;
use crate::upstream::{ResponsesReply, terminal};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

impl Inner {
    pub(super) async fn respond(
        self: Arc<Self>,
        mut body: Value,
        stream: bool,
        timeout: Duration,
    ) -> Result<ResponsesReply, Failure> {
        body["model"] = json!(self.info.model);
        body["stream"] = json!(stream);
        let resp = self
            .post(&self.responses_url, &body, stream, timeout)
            .await?;
        if !stream {
            let (bytes, cut) = resp
                .read_capped(MAX_BODY)
                .await
                .map_err(|e| self.transport(e))?;
            if cut {
                return Err(self.invalid(format!("body over {MAX_BODY} bytes")));
            }
            let object: Value = serde_json::from_slice(&bytes)
                .map_err(|e| self.invalid(format!("unparsable response body: {e}")))?;
            if !object["output"].is_array() {
                return Err(self.invalid("a response object without `output`"));
            }
            return Ok(ResponsesReply::Whole(object));
        }
        let name = self.info.name.clone();
        let state = (
            body_stream(resp),
            SseParser::default(),
            VecDeque::<Result<Value, Failure>>::new(),
            false,
            self,
        );
        let events = futures::stream::unfold(state, move |mut s| {
            let name = name.clone();
            async move {
                loop {
                    if let Some(event) = s.2.pop_front() {
                        return Some((event, s));
                    }
                    if s.3 {
                        return None;
                    }
                    let datas = match s.0.next().await {
                        Some(Ok(bytes)) => s.1.push(&bytes).map_err(|e| invalid(&name, e)),
                        Some(Err(e)) => Err(s.4.transport(e)),
                        None => {
                            s.3 = true;
                            let last = s.1.finish();
                            if last.is_empty() {
                                Err(invalid(&name, "stream ended before the response completed"))
                            } else {
                                Ok(last)
                            }
                        }
                    };
                    match datas {
                        Ok(datas) => {
                            for data in datas.iter().filter(|d| d.trim() != "[DONE]") {
                                match serde_json::from_str::<Value>(data) {
                                    Ok(event) => {
                                        let last = terminal(&event).is_some();
                                        s.2.push_back(Ok(event));
                                        if last {
                                            s.3 = true;
                                            break;
                                        }
                                    }
                                    Err(e) => {
                                        s.2.push_back(Err(invalid(
                                            &name,
                                            format!("unparsable event: {e}"),
                                        )));
                                        s.3 = true;
                                        break;
                                    }
                                }
                            }
                        }
                        Err(failure) => {
                            s.2.push_back(Err(failure));
                            s.3 = true;
                        }
                    }
                }
            }
        });
        Ok(ResponsesReply::Events(events.boxed()))
    }
}
