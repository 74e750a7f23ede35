//! A conversation as Lambent sees it, whatever the provider: who speaks,
//! what was said, and what a call used.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// Token counts of one call, normalised across providers. The four
/// categories are disjoint: `input_tokens` excludes cache reads and writes
/// (Anthropic reports it that way; for OpenAI it is `prompt_tokens` minus
/// `cached_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    /// All cache writes, 5-minute and 1-hour.
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written for one hour (Anthropic
    /// prices it higher); zero when the provider does not split them.
    pub cache_write_1h_tokens: u64,
}
