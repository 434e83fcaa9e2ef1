// The native engine: one llama.cpp model and context, driven a step at a time. A step evaluates
// the pending tokens of many sequences in one batch (split into n_batch chunks) and samples the
// next token of every sequence that asked for one, in C++, so the JavaScript side pays one round
// trip per step instead of one per token per sequence. Not thread-safe: the caller serialises.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <mutex>
#include <vector>

#include "engine-sampling.h"
#include "llama.h"

struct ggml_backend_event;

namespace llmfleet {

class ForkJoin;

struct EngineOptions {
    std::string model_path;
    int32_t gpu_layers = 0;     // -1 = all
    uint32_t context_size = 0;  // total KV cells (all sequences); 0 = model default
    uint32_t sequences = 1;
    uint32_t batch_size = 512;
    uint32_t ubatch_size = 512;
    int32_t threads = 4;
    bool flash_attention = false;
    bool kv_unified = true;  // lets a sequence share another's prefix cells (seq_cp) at no cost
    bool swa_full = true;    // prefix reuse needs the full KV on sliding-window models
    // With layers on a GPU, keep the token embeddings there too (llama.cpp leaves them on the CPU):
    // the embedding lookup then runs on the GPU and a decode step is one GPU graph, not a CPU
    // split plus a host-to-device copy before it.
    bool gpu_embeddings = true;
    // Pipelined decoding: after a step in which every sequence decoded, launch the next step's
    // decode (each sequence's last sampled token) before returning, so the device works while the
    // caller handles the tokens. The next step uses it when its input is exactly that (the usual
    // case), or rolls it back (cells removed) when anything else comes first. -1 = on when layers
    // are on a GPU (a CPU decode is synchronous, nothing would overlap), 0 = off, 1 = on.
    int32_t pipeline = -1;
    // A model over several GPUs: llama.cpp's split mode (LLAMA_SPLIT_MODE_LAYER: whole layers per
    // GPU, ROW: each matrix's rows across them, NONE: one GPU) and each GPU's share of the model
    // (empty: by free memory). No effect with one device.
    int32_t split_mode = 1;  // LLAMA_SPLIT_MODE_LAYER
    std::vector<float> tensor_split;
    // Greedy sequences sample on the device: llama.cpp's backend sampler puts the argmax in the
    // step's graph, so one token per sequence comes back instead of its logits (8 MB a step at 64
    // sequences and a 32K vocabulary, scanned on the CPU while the GPU waits). A sequence given a
    // temperature samples on the CPU. 0 = off, 1 = on.
    int32_t device_greedy = 0;
};

constexpr uint32_t DECODE_LOOP_BATCH_GET_ONE = 1;
constexpr uint32_t DECODE_LOOP_NO_LOGITS = 2;

struct SamplerConfig {
    float temperature = 0.0f;  // 0 = greedy (argmax in C++, no sampler chain)
    int32_t top_k = 40;
    float top_p = 0.95f;
    uint32_t seed = 0xFFFFFFFF;
};

// One step's input: for each entry, tokens to evaluate at consecutive positions from pos0; when
// sample is set, the token after the last one is sampled and returned.
struct StepEntry {
    int32_t seq;
    int32_t pos0;
    int32_t offset;  // into StepInput::tokens
    int32_t count;
    bool sample;
    bool last = false;  // the sampled token is the request's last: its decode is not speculated
};

struct StepInput {
    std::vector<StepEntry> entries;
    std::vector<llama_token> tokens;
    // Multi-step decoding: when every entry samples, decode this many tokens per sequence before
    // returning, each sampled token fed straight back (a sequence stops early at end of generation).
    int32_t lookahead = 1;
};

class Engine {
public:
    static std::unique_ptr<Engine> load(const EngineOptions & opts, std::string & error);
    ~Engine();

    // Returns lookahead tokens per entry (-1 where none was sampled); empty + error on failure.
    std::vector<llama_token> step(const StepInput & in, std::string & error);
    void synchronize();
    // Greedy decode in C++ only (diagnostics): seconds per step, empty + error on failure.
    // mode bits: DECODE_LOOP_BATCH_GET_ONE (llama-bench's batch), DECODE_LOOP_NO_LOGITS (synchronize
    // only, the token stays `first`). Both measured no different from the engine's own (H100, 2026-11-23),
    // and neither did llama.cpp's backend (on-device) greedy sampler.
    std::vector<double> decode_loop(int32_t seq, int32_t pos0, llama_token first, int32_t n, uint32_t mode, std::string & error);
    // How many times llama.cpp reused the previous compute graph instead of building one.
    int32_t graphs_reused() const;

    // Resets the sequence's sampling: drops its extras (set_extras after it to add them).
    void set_sampler(int32_t seq, const SamplerConfig & cfg);
    // Penalties, biases, a grammar, logprobs (engine-sampling.h) on top of the sampler config set
    // last; the sequence then samples on the CPU. false + error when the grammar does not parse.
    bool set_extras(int32_t seq, SamplingExtras extras, std::string & error);
    // The logprobs of the tokens sampled since the last call (set_extras with logprobs >= 0).
    std::vector<TokenLogprob> take_logprobs(int32_t seq);

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool unparse_special) const;
    bool is_eog(llama_token t) const;
    llama_token bos() const;
    // Empty when the model has no template llama.cpp knows.
    std::string apply_chat_template(const std::vector<std::string> & roles, const std::vector<std::string> & contents) const;

    bool seq_rm(int32_t seq, int32_t p0, int32_t p1);
    void seq_cp(int32_t src, int32_t dst, int32_t p0, int32_t p1);
    // Moves the sequence's cells in [p0, p1) by delta positions (keys re-rotated on the next
    // decode); false when the model's memory cannot shift (engine-seq.cpp).
    bool seq_add(int32_t seq, int32_t p0, int32_t p1, int32_t delta);
    // Diagnostics: evaluates tokens at pos0.. in the sequence and returns every position's logits
    // (tokens x n_vocab); empty + error on failure (engine-seq.cpp).
    std::vector<float> eval_logits(int32_t seq, int32_t pos0, const std::vector<llama_token> & tokens, std::string & error);
    // The last committed position (-1 when empty); never waits for or drops a speculated decode.
    int32_t seq_pos_max(int32_t seq);

    size_t state_size(int32_t seq);
    // Waits for the device's queued work, then copies the state: the two timed apart (export_stats).
    size_t state_get_into(int32_t seq, uint8_t * dst, size_t size);
    // Totals over state_get_into and state_get_shared calls: the wait for the device to finish work queued before it (a
    // prompt's last layers: llama.cpp decodes asynchronously when no logits are read) and the copy.
    // copies: the tensor copies llama.cpp made (one per contiguous run of cells per layer, K and V;
    // a scattered sequence makes many), batched on the device (copy-batch.h).
    struct ExportStats {
        uint64_t exports = 0, copies = 0;
        double wait_seconds = 0, copy_seconds = 0;
    };
    ExportStats export_stats();
    // Totals over state_set calls (imports: hand-offs, KV store loads): seconds in llama.cpp's read,
    // and its tensor copies (as ExportStats::copies).
    struct ImportStats {
        uint64_t imports = 0, copies = 0;
        double seconds = 0;
    };
    ImportStats import_stats();
    size_t state_set(int32_t seq, const uint8_t * data, size_t size);
    // state_set whose copies to the device are not waited for: `ticket` names them (0: none left,
    // as on a CPU), for wait_copies. Until then the state's memory must stay as it is and the
    // sequence must not be evaluated; other sequences may be.
    size_t state_set_detached(int32_t seq, const uint8_t * data, size_t size, uint32_t & ticket);
    // Waits for the copies of a detached state_set (any thread; an unknown ticket returns at once).
    void wait_copies(uint32_t ticket);
    // The two with the state's rows in another place (a shared region, shared-region.h): llama.cpp
    // writes or reads the headers at `host` (`size` bytes; where rows go it is never touched), each
    // row moves to or from `alt` + its offset in the state (`device`: alt is device memory). The get
    // appends each row's offset and size to `rows`. 0 and `error` on failure; a failed set leaves the
    // sequence holding part of the state (the caller clears it). Static builds only (copy-batch.h):
    // elsewhere both fail, saying so.
    size_t state_get_shared(int32_t seq, uint8_t * host, size_t size, uint8_t * alt, bool device, std::vector<uint64_t> & rows, std::string & error);
    size_t state_set_shared(int32_t seq, const uint8_t * host, size_t size, uint8_t * alt, bool device, std::string & error);

    uint32_t n_ctx() const;
    uint32_t n_ctx_seq() const;
    uint32_t n_seq_max() const;
    int32_t n_vocab() const;
    int32_t n_embd() const;
    uint64_t model_bytes() const;
    uint64_t model_params() const;
    std::string description() const;
    bool flash_attention() const { return opts_.flash_attention; }
    bool kv_unified() const { return opts_.kv_unified; }
    bool on_gpu() const;
    bool pipelined() const { return pipeline_; }
    bool device_greedy() const { return !device_greedy_.empty(); }
    // Speculated decodes a step used, and ones rolled back.
    uint64_t speculated_used() const { return spec_used_; }
    uint64_t speculated_dropped() const { return spec_dropped_; }
    // Seconds spent sampling batched steps once their logits were ready (the device idles meanwhile).
    double sample_seconds() const { return sample_seconds_; }

private:
    std::vector<float> tensor_split_;  // llama_max_devices() shares, read while the model loads
    std::mutex export_mu_;
    ExportStats export_stats_;
    ImportStats import_stats_;
    // One import into import_stats_ (state_set, state_set_shared).
    void count_import(uint64_t copies, double seconds);
    // One export into export_stats_ (state_get_into, state_get_shared): the wait for the device, then the copy.
    void count_export(uint64_t copies, double wait_seconds, double copy_seconds);
    // Copies of detached state_set calls not yet waited for, by ticket (waited for before the
    // context is freed).
    std::mutex copies_mu_;
    std::map<uint32_t, std::vector<ggml_backend_event *>> pending_copies_;
    uint32_t next_ticket_ = 0;
    Engine() = default;
    // Row i of the batch: one token of one sequence.
    void put(int32_t i, llama_token token, int32_t pos, int32_t seq, bool logits);
    bool decode_chunk(int32_t n_tokens, std::string & error);
    // The batch row of one sampled sequence.
    struct Row {
        int32_t seq;
        int32_t idx;
    };
    // The next token of every row, in order: the device's token (device greedy), the sequence's
    // sampler chain, or the argmax of its logits; greedy rows' argmaxes run on a pool when there
    // are many. sample_rows waits for the device and counts the time; sample_rows_ready does neither.
    std::vector<llama_token> sample_rows(const std::vector<Row> & rows);
    std::vector<llama_token> sample_rows_ready(const std::vector<Row> & rows);
    bool on_device(int32_t seq) const { return !on_device_.empty() && on_device_[seq]; }
    bool continue_steps(const StepInput & in, std::vector<llama_token> & out, std::string & error);
    bool decode_entries(const StepInput & in, std::vector<llama_token> & out, int32_t k, std::string & error);
    bool take_speculated(const StepInput & in, std::vector<llama_token> & out, int32_t k);
    void speculate(const StepInput & in, const std::vector<llama_token> & out, int32_t k);
    // Rolls back a speculated step (before anything else touches the context).
    void settle();

    struct Speculated {
        int32_t seq;
        int32_t pos;
        llama_token token;
    };
    std::vector<Speculated> speculated_;
    bool pipeline_ = false;
    uint64_t spec_used_ = 0;
    uint64_t spec_dropped_ = 0;
    double sample_seconds_ = 0;
    std::unique_ptr<ForkJoin> pool_;  // made on the first step with many greedy rows
    std::vector<llama_sampler *> device_greedy_;  // one greedy chain per sequence (device_greedy)
    std::vector<bool> on_device_;                 // the sequence's chain is attached to the context

    EngineOptions opts_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    llama_batch batch_{};
    std::vector<SamplerConfig> sampler_cfg_;
    std::vector<llama_sampler *> samplers_;
    std::vector<std::unique_ptr<SeqSampler>> extras_;  // per sequence; nullptr = none
    std::vector<llama_model_tensor_buft_override> overrides_;  // read during the model load
};

}  // namespace llmfleet
