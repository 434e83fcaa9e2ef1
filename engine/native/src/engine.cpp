#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>

#include "copy-batch.h"
#include "ggml-backend.h"
#include "fork-join.h"

namespace llmfleet {

namespace {

void log_callback(ggml_log_level level, const char * text, void *) {
    static const bool verbose = std::getenv("LLMFLEET_NATIVE_LOG") != nullptr;
    if (verbose || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

void init_backend_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        llama_log_set(log_callback, nullptr);
        // CUDA: let ggml reorder independent nodes of a graph so they run concurrently (measured
        // +1.5 % single-stream decode on the H100, bench/results/gpu.json); GGML_CUDA_GRAPH_OPT=0
        // in the environment turns it off. No effect on CPU builds.
        setenv("GGML_CUDA_GRAPH_OPT", "1", 0);
        llama_backend_init();
    });
}

// Greedy sampling runs on the CPU while the GPU waits for the next step's tokens: with 32K-150K
// logits per sequence and 64 sequences a step, the one-branch-per-logit loop cost ~0.6 ms of a
// ~10 ms step. Two branch-free passes (the maximum over 8 independent lanes, which compilers
// vectorise, then its first index) return the same token, the first of equal maxima.
llama_token argmax(const float * logits, int32_t n) {
    constexpr int32_t kLanes = 8;
    float lane[kLanes];
    for (int32_t j = 0; j < kLanes; j++) lane[j] = logits[0];
    int32_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int32_t j = 0; j < kLanes; j++) lane[j] = logits[i + j] > lane[j] ? logits[i + j] : lane[j];
    }
    float best_v = lane[0];
    for (int32_t j = 1; j < kLanes; j++) best_v = lane[j] > best_v ? lane[j] : best_v;
    for (; i < n; i++) best_v = logits[i] > best_v ? logits[i] : best_v;
    for (int32_t b = 0; b < n; b++) {
        if (logits[b] == best_v) return b;
    }
    return 0;  // all NaN
}

llama_sampler * greedy_chain() {
    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    return chain;
}

}  // namespace

std::unique_ptr<Engine> Engine::load(const EngineOptions & opts, std::string & error) {
    init_backend_once();
    std::unique_ptr<Engine> e(new Engine());
    e->opts_ = opts;

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = opts.gpu_layers;
    mp.split_mode = static_cast<llama_split_mode>(opts.split_mode);
    if (!opts.tensor_split.empty()) {
        if (opts.tensor_split.size() > llama_max_devices()) {
            error = "tensorSplit has " + std::to_string(opts.tensor_split.size()) + " shares; llama.cpp takes at most " + std::to_string(llama_max_devices());
            return nullptr;
        }
        e->tensor_split_.assign(llama_max_devices(), 0.0f);
        std::copy(opts.tensor_split.begin(), opts.tensor_split.end(), e->tensor_split_.begin());
        mp.tensor_split = e->tensor_split_.data();
    }
    ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
    if (opts.gpu_embeddings && opts.gpu_layers != 0 && gpu) {
        e->overrides_ = {{"^token_embd\\.weight$", ggml_backend_dev_buffer_type(gpu)}, {nullptr, nullptr}};
        mp.tensor_buft_overrides = e->overrides_.data();
    }
    e->model_ = llama_model_load_from_file(opts.model_path.c_str(), mp);
    if (!e->model_) {
        error = "failed to load model " + opts.model_path;
        return nullptr;
    }
    e->vocab_ = llama_model_get_vocab(e->model_);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = opts.context_size;
    cp.n_batch = opts.batch_size;
    cp.n_ubatch = opts.ubatch_size;
    cp.n_seq_max = opts.sequences;
    cp.n_threads = opts.threads;
    cp.n_threads_batch = opts.threads;
    cp.flash_attn_type = opts.flash_attention ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.kv_unified = opts.kv_unified;
    cp.swa_full = opts.swa_full;
    cp.no_perf = true;
    std::vector<llama_sampler_seq_config> device_samplers;
    if (opts.device_greedy > 0) {
        for (uint32_t s = 0; s < opts.sequences; s++) {
            llama_sampler * chain = greedy_chain();
            e->device_greedy_.push_back(chain);
            device_samplers.push_back({static_cast<llama_seq_id>(s), chain});
        }
        cp.samplers = device_samplers.data();
        cp.n_samplers = device_samplers.size();
        cp.n_outputs_max_per_seq = 1;  // a step samples at most one token per sequence
        e->on_device_.assign(opts.sequences, true);
    }
    e->ctx_ = llama_init_from_model(e->model_, cp);
    if (!e->ctx_) {
        error = "failed to create a llama.cpp context (context size too large for memory?)";
        return nullptr;
    }
    e->batch_ = llama_batch_init(static_cast<int32_t>(opts.batch_size), 0, 1);
    const bool rollback_ok = !llama_model_is_recurrent(e->model_) && !llama_model_is_hybrid(e->model_);
    // Pipelined decoding with the unified KV on a GPU crashed the engine under HTTP load on the
    // H200 in every run (an illegal instruction in the speculated step; sessions 7, 9 and 11, with
    // and without GGML_CUDA_GRAPH_OPT; compute-sanitizer found no bad access) and bought nothing
    // there (BENCHMARKS.md): auto leaves it off in that configuration and on refuses it.
    const bool unsafe = e->on_gpu() && opts.kv_unified;
    if (opts.pipeline > 0 && unsafe) {
        error = "pipelined decoding with the unified KV on a GPU is refused: it crashed the engine under load (use --kv-unified off with it, or leave --pipeline-decode off)";
        return nullptr;
    }
    e->pipeline_ = rollback_ok && (opts.pipeline > 0 || (opts.pipeline < 0 && e->on_gpu() && !unsafe));
    e->sampler_cfg_.resize(opts.sequences);
    e->samplers_.resize(opts.sequences, nullptr);
    e->extras_.resize(opts.sequences);
    return e;
}

Engine::~Engine() {
    // Copies of detached imports still on their way into the KV cache: before it is freed.
    std::vector<uint32_t> tickets;
    {
        std::lock_guard<std::mutex> lock(copies_mu_);
        for (const auto & p : pending_copies_) tickets.push_back(p.first);
    }
    for (uint32_t t : tickets) wait_copies(t);
    for (auto * s : samplers_) {
        if (s) llama_sampler_free(s);
    }
    if (batch_.token) llama_batch_free(batch_);
    if (ctx_) llama_free(ctx_);
    for (auto * s : device_greedy_) llama_sampler_free(s);  // after the context that used them
    if (model_) llama_model_free(model_);
}

void Engine::put(int32_t i, llama_token token, int32_t pos, int32_t seq, bool logits) {
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = logits;
}

bool Engine::decode_chunk(int32_t n_tokens, std::string & error) {
    batch_.n_tokens = n_tokens;
    const int32_t ret = llama_decode(ctx_, batch_);
    if (ret == 0) return true;
    error = ret == 1 ? "no KV cache slot for the batch (context full)" : "llama_decode failed with code " + std::to_string(ret);
    return false;
}

// Below this many greedy rows a step samples on the calling thread (waking the pool costs more).
constexpr size_t kParallelSampleRows = 8;

std::vector<llama_token> Engine::sample_rows(const std::vector<Row> & rows) {
    llama_synchronize(ctx_);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<llama_token> got = sample_rows_ready(rows);
    sample_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return got;
}

std::vector<llama_token> Engine::sample_rows_ready(const std::vector<Row> & rows) {
    std::vector<llama_token> got(rows.size(), -1);
    std::vector<const float *> logits(rows.size(), nullptr);
    size_t greedy = 0;
    for (size_t i = 0; i < rows.size(); i++) {
        const int32_t seq = rows[i].seq;
        if (extras_[seq]) {
            got[i] = extras_[seq]->sample(llama_get_logits_ith(ctx_, rows[i].idx));
            continue;
        }
        if (on_device(seq)) {
            got[i] = llama_get_sampled_token_ith(ctx_, rows[i].idx);
            continue;
        }
        if (sampler_cfg_[seq].temperature > 0.0f && samplers_[seq]) {
            got[i] = llama_sampler_sample(samplers_[seq], ctx_, rows[i].idx);
            continue;
        }
        logits[i] = llama_get_logits_ith(ctx_, rows[i].idx);
        greedy++;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(vocab_);
    const std::function<void(int32_t)> one = [&](int32_t i) {
        if (logits[i]) got[i] = argmax(logits[i], n_vocab);
    };
    if (greedy < kParallelSampleRows) {
        for (size_t i = 0; i < rows.size(); i++) one(static_cast<int32_t>(i));
        return got;
    }
    if (!pool_) pool_ = std::make_unique<ForkJoin>(std::max(1, std::min(opts_.threads, 8) - 1));
    pool_->run(static_cast<int32_t>(rows.size()), one);
    return got;
}

void Engine::set_sampler(int32_t seq, const SamplerConfig & cfg) {
    if (seq < 0 || seq >= static_cast<int32_t>(samplers_.size())) return;
    sampler_cfg_[seq] = cfg;
    extras_[seq].reset();
    const bool device = !device_greedy_.empty() && cfg.temperature <= 0.0f;
    if (!device_greedy_.empty() && device != on_device_[seq]) {
        settle();  // the graph changes: nothing speculated may be in flight with the old one
        if (device) {
            // A chain is initialised for the device once: a sequence going back to greedy gets a new one.
            llama_sampler_free(device_greedy_[seq]);
            device_greedy_[seq] = greedy_chain();
            on_device_[seq] = llama_set_sampler(ctx_, seq, device_greedy_[seq]);
        } else {
            llama_set_sampler(ctx_, seq, nullptr);
            on_device_[seq] = false;
        }
    }
    if (samplers_[seq]) llama_sampler_free(samplers_[seq]);
    samplers_[seq] = nullptr;
    if (cfg.temperature <= 0.0f) return;
    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (cfg.top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(cfg.top_k));
    if (cfg.top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(cfg.top_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(cfg.temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(cfg.seed));
    samplers_[seq] = chain;
}

bool Engine::set_extras(int32_t seq, SamplingExtras extras, std::string & error) {
    if (seq < 0 || seq >= static_cast<int32_t>(extras_.size())) return false;
    extras_[seq].reset();
    if (extras.empty()) return true;
    auto sampler = SeqSampler::make(vocab_, sampler_cfg_[seq], std::move(extras), error);
    if (!sampler) return false;
    if (on_device(seq)) {
        settle();  // the graph changes: nothing speculated may be in flight with the old one
        llama_set_sampler(ctx_, seq, nullptr);
        on_device_[seq] = false;
    }
    extras_[seq] = std::move(sampler);
    return true;
}

std::vector<TokenLogprob> Engine::take_logprobs(int32_t seq) {
    if (seq < 0 || seq >= static_cast<int32_t>(extras_.size()) || !extras_[seq]) return {};
    return extras_[seq]->take_logprobs();
}

std::vector<llama_token> Engine::step(const StepInput & in, std::string & error) {
    const int32_t k = in.lookahead > 1 ? in.lookahead : 1;
    std::vector<llama_token> out(in.entries.size() * k, -1);
    if (!take_speculated(in, out, k) && !decode_entries(in, out, k, error)) return {};
    if (k > 1 && !continue_steps(in, out, error)) return {};
    if (pipeline_) speculate(in, out, k);
    return out;
}

bool Engine::decode_entries(const StepInput & in, std::vector<llama_token> & out, int32_t k, std::string & error) {
    struct Pending {
        size_t entry;
        int32_t idx;
    };
    std::vector<Pending> pending;
    const int32_t cap = static_cast<int32_t>(opts_.batch_size);
    int32_t n = 0;
    auto flush = [&]() -> bool {
        if (n == 0) return true;
        if (!decode_chunk(n, error)) return false;
        std::vector<Row> rows;
        for (const Pending & p : pending) rows.push_back({in.entries[p.entry].seq, p.idx});
        const std::vector<llama_token> got = sample_rows(rows);
        for (size_t i = 0; i < pending.size(); i++) out[pending[i].entry * k] = got[i];
        pending.clear();
        n = 0;
        return true;
    };
    for (size_t ei = 0; ei < in.entries.size(); ei++) {
        const StepEntry & e = in.entries[ei];
        for (int32_t j = 0; j < e.count; j++) {
            if (n == cap && !flush()) return false;
            const bool logits = e.sample && j == e.count - 1;
            put(n, in.tokens[e.offset + j], e.pos0 + j, e.seq, logits);
            if (logits) pending.push_back({ei, n});
            n++;
        }
    }
    return flush();
}

bool Engine::continue_steps(const StepInput & in, std::vector<llama_token> & out, std::string & error) {
    const int32_t k = in.lookahead;
    const size_t n = in.entries.size();
    std::vector<bool> active(n);
    for (size_t e = 0; e < n; e++) active[e] = in.entries[e].sample && out[e * k] >= 0 && !is_eog(out[e * k]);
    for (int32_t step = 1; step < k; step++) {
        int32_t m = 0;
        std::vector<size_t> entries;
        std::vector<Row> rows;
        for (size_t e = 0; e < n; e++) {
            if (!active[e]) continue;
            const StepEntry & en = in.entries[e];
            put(m, out[e * k + step - 1], en.pos0 + en.count + step - 1, en.seq, true);
            entries.push_back(e);
            rows.push_back({en.seq, m});
            m++;
        }
        if (m == 0) break;
        if (!decode_chunk(m, error)) return false;
        const std::vector<llama_token> got = sample_rows(rows);
        for (int32_t i = 0; i < m; i++) {
            const size_t e = entries[i];
            out[e * k + step] = got[i];
            if (is_eog(got[i])) active[e] = false;
        }
    }
    return true;
}

void Engine::synchronize() { llama_synchronize(ctx_); }

std::vector<double> Engine::decode_loop(int32_t seq, int32_t pos0, llama_token first, int32_t n, uint32_t mode, std::string & error) {
    settle();
    std::vector<double> seconds;
    seconds.reserve(n);
    auto t0 = std::chrono::steady_clock::now();
    llama_token t = first;
    for (int32_t i = 0; i < n; i++) {
        if (mode & DECODE_LOOP_BATCH_GET_ONE) {
            if (llama_decode(ctx_, llama_batch_get_one(&t, 1)) != 0) error = "llama_decode failed";
        } else {
            put(0, t, pos0 + i, seq, true);
            decode_chunk(1, error);
        }
        if (!error.empty()) break;
        if (mode & DECODE_LOOP_NO_LOGITS) {
            llama_synchronize(ctx_);
        } else {
            t = sample_rows_ready({{seq, mode & DECODE_LOOP_BATCH_GET_ONE ? -1 : 0}})[0];
        }
        const auto t1 = std::chrono::steady_clock::now();
        seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
        t0 = t1;
    }
    if (!error.empty()) return {};
    return seconds;
}

int32_t Engine::graphs_reused() const { return llama_perf_context(ctx_).n_reused; }

bool Engine::seq_rm(int32_t seq, int32_t p0, int32_t p1) {
    settle();
    return llama_memory_seq_rm(llama_get_memory(ctx_), seq, p0, p1);
}

void Engine::seq_cp(int32_t src, int32_t dst, int32_t p0, int32_t p1) {
    settle();
    llama_memory_seq_cp(llama_get_memory(ctx_), src, dst, p0, p1);
}

// The sequence's last committed position: a speculated cell (pipelining) is not the caller's yet.
// Reads only the cache's bookkeeping, so an in-flight speculated decode is left running.
int32_t Engine::seq_pos_max(int32_t seq) {
    const int32_t p = llama_memory_seq_pos_max(llama_get_memory(ctx_), seq);
    for (const Speculated & s : speculated_) {
        if (s.seq == seq && p == s.pos) return p - 1;
    }
    return p;
}

size_t Engine::state_size(int32_t seq) {
    settle();
    return llama_state_seq_get_size(ctx_, seq);
}

namespace {

// Runs a llama.cpp state read or write with its tensor copies batched (copy-batch.h); they are
// waited for before it returns, also when llama.cpp throws, so the caller may reuse the memory at once.
template <typename F>
size_t batched(uint64_t & copies, F && f) {
    CopyBatch batch;
    const size_t n = f();
    batch.finish();
    copies = batch.copies();
    return n;
}

}  // namespace

size_t Engine::state_get_into(int32_t seq, uint8_t * dst, size_t size) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    settle();
    llama_synchronize(ctx_);
    const auto t1 = clock::now();
    uint64_t copies = 0;
    const size_t n = batched(copies, [&] { return llama_state_seq_get_data(ctx_, dst, size, seq); });
    const auto t2 = clock::now();
    count_export(copies, std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
    return n;
}

void Engine::count_export(uint64_t copies, double wait_seconds, double copy_seconds) {
    std::lock_guard<std::mutex> lock(export_mu_);
    export_stats_.exports++;
    export_stats_.copies += copies;
    export_stats_.wait_seconds += wait_seconds;
    export_stats_.copy_seconds += copy_seconds;
}

Engine::ExportStats Engine::export_stats() {
    std::lock_guard<std::mutex> lock(export_mu_);
    return export_stats_;
}

size_t Engine::state_set(int32_t seq, const uint8_t * data, size_t size) {
    settle();
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t copies = 0;
    const size_t n = batched(copies, [&] { return llama_state_seq_set_data(ctx_, data, size, seq); });
    count_import(copies, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return n;
}

size_t Engine::state_set_detached(int32_t seq, const uint8_t * data, size_t size, uint32_t & ticket) {
    settle();
    const auto t0 = std::chrono::steady_clock::now();
    ticket = 0;
    size_t n = 0;
    uint64_t copies = 0;
    std::vector<ggml_backend_event_t> events;
    {
        CopyBatch batch;
        try {
            n = llama_state_seq_set_data(ctx_, data, size, seq);
        } catch (...) {
            batch.finish();  // nothing may still read `data` once this returns
            throw;
        }
        copies = batch.copies();
        events = batch.detach();
    }
    count_import(copies, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (events.empty()) return n;
    std::lock_guard<std::mutex> lock(copies_mu_);
    ticket = ++next_ticket_ == 0 ? ++next_ticket_ : next_ticket_;
    pending_copies_[ticket] = std::move(events);
    return n;
}

void Engine::wait_copies(uint32_t ticket) {
    std::vector<ggml_backend_event_t> events;
    {
        std::lock_guard<std::mutex> lock(copies_mu_);
        auto it = pending_copies_.find(ticket);
        if (it == pending_copies_.end()) return;
        events = std::move(it->second);
        pending_copies_.erase(it);
    }
    for (auto * ev : events) {
        ggml_backend_event_synchronize(ev);
        ggml_backend_event_free(ev);
    }
}

void Engine::count_import(uint64_t copies, double seconds) {
    std::lock_guard<std::mutex> lock(export_mu_);
    import_stats_.imports++;
    import_stats_.copies += copies;
    import_stats_.seconds += seconds;
}

size_t Engine::state_get_shared(int32_t seq, uint8_t * host, size_t size, uint8_t * alt, bool device, std::vector<uint64_t> & rows, std::string & error) {
#ifndef LLMFLEET_WRAP_COPIES
    (void)seq, (void)host, (void)size, (void)alt, (void)device, (void)rows;
    error = "a state in a shared region needs the addon's static build (its copies rerouted)";
    return 0;
#else
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    settle();
    llama_synchronize(ctx_);
    const auto t1 = clock::now();
    size_t n = 0;
    uint64_t copies = 0;
    {
        CopyBatch batch;
        batch.redirect({host, size, alt, device, &rows});
        n = llama_state_seq_get_data(ctx_, host, size, seq);
        batch.finish();
        copies = batch.copies();
        if (!batch.error().empty()) error = batch.error();
    }
    if (n != size && error.empty()) error = "llama.cpp wrote " + std::to_string(n) + " state bytes, expected " + std::to_string(size);
    // Counted with state_get_into's (export_stats): an export into a region is an export too.
    count_export(copies, std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(clock::now() - t1).count());
    return error.empty() ? n : 0;
#endif
}

size_t Engine::state_set_shared(int32_t seq, const uint8_t * host, size_t size, uint8_t * alt, bool device, std::string & error) {
#ifndef LLMFLEET_WRAP_COPIES
    (void)seq, (void)host, (void)size, (void)alt, (void)device;
    error = "a state in a shared region needs the addon's static build (its copies rerouted)";
    return 0;
#else
    settle();
    const auto t0 = std::chrono::steady_clock::now();
    size_t n = 0;
    uint64_t copies = 0;
    {
        CopyBatch batch;
        batch.redirect({host, size, alt, device, nullptr});
        try {
            n = llama_state_seq_set_data(ctx_, host, size, seq);
        } catch (const std::exception & e) {
            error = e.what();
        }
        batch.finish();
        copies = batch.copies();
        if (!batch.error().empty()) error = batch.error();
    }
    if (n == 0 && error.empty()) error = "llama.cpp rejected the sequence state (wrong model, layout or size)";
    count_import(copies, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return error.empty() ? n : 0;
#endif
}

Engine::ImportStats Engine::import_stats() {
    std::lock_guard<std::mutex> lock(export_mu_);
    return import_stats_;
}

}  // namespace llmfleet
