//! The simulator's embeddings: deterministic vectors, so that tests and
//! demos can compare them (the same input always gives the same vector,
//! different inputs different ones) and caching is observable.

use crate::domain::{
    CompletionRequest, EmbeddingInput, EmbeddingRequest, Embeddings, Message, Usage,
};
use sha2::{Digest, Sha256};

/// The conversation the simulator's fault decisions see for an embeddings
/// request: one user message per text input, so that scripts, faults and
/// the context bound apply as they do to completions.
pub(crate) fn probe(req: &EmbeddingRequest) -> CompletionRequest {
    CompletionRequest {
        model: req.model.clone(),
        messages: req
            .input
            .iter()
            .map(|i| match i {
                EmbeddingInput::Text(t) => Message::user(t.clone()),
                EmbeddingInput::Tokens(t) => Message::user(format!("{t:?}")),
            })
            .collect(),
        ..Default::default()
    }
}

/// The answer to `req` as `model`: for each input, a unit vector of
/// `req.dimensions` (else `default_dimensions`) components drawn from the
/// SHA-256 of the input, so it depends on the input alone.
pub(crate) fn answer(model: &str, req: &EmbeddingRequest, default_dimensions: u32) -> Embeddings {
    let dims = req.dimensions.unwrap_or(default_dimensions).max(1) as usize;
    let vectors = req.input.iter().map(|i| vector(i, dims)).collect();
    let tokens = req.input.iter().map(EmbeddingInput::tokens).sum();
    Embeddings {
        model: model.to_string(),
        vectors,
        usage: Usage::new(tokens, 0),
    }
}

/// One input's vector: SHA-256 in counter mode, eight components a block,
/// each in [-1, 1), then scaled to length 1 (as OpenAI's are).
fn vector(input: &EmbeddingInput, dims: usize) -> Vec<f32> {
    let seed = serde_json::to_vec(input).unwrap_or_default();
    let mut out = Vec::with_capacity(dims);
    let mut block: u64 = 0;
    while out.len() < dims {
        let digest = Sha256::new()
            .chain_update(&seed)
            .chain_update(block.to_le_bytes())
            .finalize();
        for word in digest.chunks_exact(4) {
            if out.len() == dims {
                break;
            }
            let n = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            out.push((f64::from(n) / f64::from(u32::MAX) * 2.0 - 1.0) as f32);
        }
        block += 1;
    }
    let norm = out
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in &mut out {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(texts: &[&str], dimensions: Option<u32>) -> EmbeddingRequest {
        EmbeddingRequest {
            model: "e".into(),
            input: texts
                .iter()
                .map(|t| EmbeddingInput::Text(t.to_string()))
                .collect(),
            dimensions,
            ..Default::default()
        }
    }

    #[test]
    fn same_text_same_vector_of_unit_length() {
        let a = answer("e", &req(&["hello", "world", "hello"], None), 16);
        assert_eq!(a.vectors.len(), 3);
        assert_eq!(a.vectors[0], a.vectors[2]);
        assert_ne!(a.vectors[0], a.vectors[1]);
        assert_eq!(a.vectors[0].len(), 16);
        let norm: f32 = a.vectors[1].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        let b = answer("e", &req(&["hello"], Some(5)), 16);
        assert_eq!(b.vectors[0].len(), 5);
        assert_eq!(a.usage.prompt_tokens, 2 + 2 + 2);
    }
}
