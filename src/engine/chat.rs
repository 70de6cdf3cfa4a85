//! Chat templates for this model: its own template (or one the caller gives), its BOS and EOS
//! texts, and prompts tokenized so that message contents stay text.

use super::Model;
use crate::chat::{self, Clock, Conversation, TemplateContext};
use crate::error::{Error, Result};

pub struct ChatOptions {
    /// A template to use instead of the model's.
    pub template: Option<String>,
    pub add_generation_prompt: bool,
    /// `bos_token` / `eos_token` texts instead of the vocabulary's.
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// What `strftime_now` sees.
    pub clock: Clock,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            template: None,
            add_generation_prompt: true,
            bos_token: None,
            eos_token: None,
            clock: Clock::utc_now(),
        }
    }
}

impl Model {
    /// The conversation as the template renders it, byte for byte.
    pub fn apply_chat_template(&self, conversation: &Conversation, opts: &ChatOptions) -> Result<String> {
        let template = opts.template.as_deref().or(self.info.chat_template.as_deref()).ok_or(Error::NoChatTemplate)?;
        let text = |given: &Option<String>, id: Option<u32>| {
            given
                .clone()
                .or_else(|| id.and_then(|id| self.tokenizer.token_text(id)).map(str::to_owned))
                .unwrap_or_default()
        };
        let context = TemplateContext {
            bos_token: &text(&opts.bos_token, self.tokenizer.bos()),
            eos_token: &text(&opts.eos_token, self.tokenizer.eos()),
            add_generation_prompt: opts.add_generation_prompt,
            clock: opts.clock,
        };
        chat::render(template, conversation, &context)
    }

    /// The rendered conversation as token ids. Special tokens the template writes are special;
    /// the same text inside any string of the conversation (contents, names, tool calls) is
    /// tokenized as text, so a message cannot forge a turn. BOS is added where the model adds
    /// one, unless the template already begins with it.
    pub fn tokenize_chat(&self, conversation: &Conversation, opts: &ChatOptions) -> Result<Vec<u32>> {
        let marked = conversation.map_strings(&|s| self.tokenizer.mark_literal(s));
        let prompt = self.apply_chat_template(&marked, opts)?;
        let mut ids = self.tokenizer.encode_marked(&prompt, false);
        if let Some(bos) = self.tokenizer.bos().filter(|_| self.tokenizer.add_bos_default()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}
