// The engine's model-facing calls that need no step: tokenizer, chat template and model facts.
#include <cstring>

#include "engine.h"

namespace llmfleet {

std::vector<llama_token> Engine::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    const int32_t len = static_cast<int32_t>(text.size());
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), len, out.data(), static_cast<int32_t>(out.size()), add_special, parse_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), len, out.data(), static_cast<int32_t>(out.size()), add_special, parse_special);
    }
    out.resize(n > 0 ? n : 0);
    return out;
}

std::string Engine::detokenize(const std::vector<llama_token> & tokens, bool unparse_special) const {
    std::string out(tokens.size() * 8 + 16, '\0');
    const int32_t n_tok = static_cast<int32_t>(tokens.size());
    int32_t n = llama_detokenize(vocab_, tokens.data(), n_tok, out.data(), static_cast<int32_t>(out.size()), false, unparse_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_detokenize(vocab_, tokens.data(), n_tok, out.data(), static_cast<int32_t>(out.size()), false, unparse_special);
    }
    out.resize(n > 0 ? n : 0);
    return out;
}

bool Engine::is_eog(llama_token t) const { return llama_vocab_is_eog(vocab_, t); }

llama_token Engine::bos() const { return llama_vocab_get_add_bos(vocab_) ? llama_vocab_bos(vocab_) : LLAMA_TOKEN_NULL; }

namespace {

// A GGUF without a chat template (the default Gemma 3 270M has none) gets llama.cpp's built-in
// template of its model family where the family has one format, as node-llama-cpp infers its chat
// wrapper from the architecture; other models get the caller's plain transcript.
const char * family_chat_template(const llama_model * model) {
    char arch[64] = {0};
    if (llama_model_meta_val_str(model, "general.architecture", arch, sizeof arch) < 0) return nullptr;
    return std::strncmp(arch, "gemma", 5) == 0 ? "gemma" : nullptr;
}

}  // namespace

std::string Engine::apply_chat_template(const std::vector<std::string> & roles, const std::vector<std::string> & contents) const {
    const char * tmpl = llama_model_chat_template(model_, nullptr);
    if (!tmpl) tmpl = family_chat_template(model_);
    if (!tmpl) return "";
    std::vector<llama_chat_message> msgs;
    size_t chars = 0;
    for (size_t i = 0; i < roles.size(); i++) {
        msgs.push_back({roles[i].c_str(), contents[i].c_str()});
        chars += contents[i].size();
    }
    std::string buf(chars * 2 + 256, '\0');
    int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), true, buf.data(), static_cast<int32_t>(buf.size()));
    if (n > static_cast<int32_t>(buf.size())) {
        buf.resize(n);
        n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), true, buf.data(), static_cast<int32_t>(buf.size()));
    }
    if (n < 0) return "";
    buf.resize(n);
    return buf;
}

uint32_t Engine::n_ctx() const { return llama_n_ctx(ctx_); }
uint32_t Engine::n_ctx_seq() const { return llama_n_ctx_seq(ctx_); }
uint32_t Engine::n_seq_max() const { return llama_n_seq_max(ctx_); }
int32_t Engine::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
int32_t Engine::n_embd() const { return llama_model_n_embd(model_); }
uint64_t Engine::model_bytes() const { return llama_model_size(model_); }
uint64_t Engine::model_params() const { return llama_model_n_params(model_); }
bool Engine::on_gpu() const { return opts_.gpu_layers != 0 && llama_supports_gpu_offload(); }

std::string Engine::description() const {
    char buf[256];
    llama_model_desc(model_, buf, sizeof(buf));
    return buf;
}

}  // namespace llmfleet
