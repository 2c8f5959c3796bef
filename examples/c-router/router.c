// A router for AgentRouter, written in C.
//
// Orders the upstream candidates for one completion:
//   1. upstreams whose circuit is open are left out (the host would refuse
//      them anyway; leaving them out keeps the fallback list honest);
//   2. upstreams tagged with the `prefer_tag` setting come first;
//   3. then healthy before unhealthy (error rate above `max_error_rate`,
//      default 0.5) and closed before half-open circuits;
//   4. then the lowest moving-average latency, then the lowest price per
//      1k tokens, then the name, so the order is deterministic.
//
// Built with Debian's clang and wasi-libc against bindings from
// wit-bindgen's C generator: see build.sh.

#include <stdlib.h>
#include <string.h>

#include "router.h"

// The setting `key`, as a NUL-terminated copy, or NULL when unset.
static char *setting(const char *key) {
  router_string_t k, value;
  router_string_set(&k, key);
  if (!agentrouter_plugin_settings_get(&k, &value)) {
    return NULL;
  }
  char *text = malloc(value.len + 1);
  if (text == NULL) {
    abort();
  }
  memcpy(text, value.ptr, value.len);
  text[value.len] = '\0';
  router_string_free(&value);
  return text;
}

static bool string_eq(const router_string_t *a, const char *b) {
  size_t n = strlen(b);
  return a->len == n && memcmp(a->ptr, b, n) == 0;
}

static int string_cmp(const router_string_t *a, const router_string_t *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->ptr, b->ptr, n);
  if (c != 0) return c;
  return (a->len > b->len) - (a->len < b->len);
}

// What the order is decided on, per candidate.
typedef struct {
  const router_candidate_t *candidate;
  int preferred;  // 0 when tagged with prefer_tag, else 1
  int unhealthy;  // 1 when the error rate is above the bound
  int half_open;  // 1 when the circuit is probing
} ranked_t;

static int compare(const void *pa, const void *pb) {
  const ranked_t *a = pa, *b = pb;
  if (a->preferred != b->preferred) return a->preferred - b->preferred;
  if (a->unhealthy != b->unhealthy) return a->unhealthy - b->unhealthy;
  if (a->half_open != b->half_open) return a->half_open - b->half_open;
  double la = a->candidate->ewma_latency_ms, lb = b->candidate->ewma_latency_ms;
  if (la != lb) return la < lb ? -1 : 1;
  double pa_ = a->candidate->input_cost_per_1k + a->candidate->output_cost_per_1k;
  double pb_ = b->candidate->input_cost_per_1k + b->candidate->output_cost_per_1k;
  if (pa_ != pb_) return pa_ < pb_ ? -1 : 1;
  return string_cmp(&a->candidate->name, &b->candidate->name);
}

static bool has_tag(const router_candidate_t *c, const char *tag) {
  for (size_t i = 0; i < c->tags.len; i++) {
    if (string_eq(&c->tags.ptr[i], tag)) return true;
  }
  return false;
}

void exports_router_route(router_route_request_t *req, router_list_candidate_t *candidates,
                          router_list_string_t *ret) {
  char *prefer_tag = setting("prefer_tag");
  char *bound = setting("max_error_rate");
  double max_error_rate = bound != NULL ? strtod(bound, NULL) : 0.5;
  if (!(max_error_rate >= 0.0)) max_error_rate = 0.5;  // also catches NaN

  ranked_t *ranked = calloc(candidates->len ? candidates->len : 1, sizeof(ranked_t));
  if (ranked == NULL) abort();
  size_t n = 0;
  for (size_t i = 0; i < candidates->len; i++) {
    const router_candidate_t *c = &candidates->ptr[i];
    if (c->circuit == AGENTROUTER_PLUGIN_TYPES_CIRCUIT_STATE_OPEN) continue;
    ranked[n].candidate = c;
    ranked[n].preferred = (prefer_tag != NULL && prefer_tag[0] != '\0' && has_tag(c, prefer_tag)) ? 0 : 1;
    ranked[n].unhealthy = c->error_rate > max_error_rate;
    ranked[n].half_open = c->circuit == AGENTROUTER_PLUGIN_TYPES_CIRCUIT_STATE_HALF_OPEN;
    n++;
  }
  qsort(ranked, n, sizeof(ranked_t), compare);

  // The answer is owned by the host's side of the call (the generated
  // post-return frees it), so every name is copied out of the arguments.
  ret->len = n;
  ret->ptr = n ? calloc(n, sizeof(router_string_t)) : NULL;
  if (n && ret->ptr == NULL) abort();
  for (size_t i = 0; i < n; i++) {
    router_string_dup_n(&ret->ptr[i], (const char *)ranked[i].candidate->name.ptr,
                        ranked[i].candidate->name.len);
  }

  if (n > 0) {
    router_string_t message;
    router_string_set(&message, "routed");
    router_tuple2_string_string_t field;
    router_string_set(&field.f0, "first");
    field.f1 = ranked[0].candidate->name;
    router_list_tuple2_string_string_t fields = {&field, 1};
    agentrouter_plugin_log_log(AGENTROUTER_PLUGIN_LOG_LEVEL_DEBUG, &message, &fields);
  }

  free(ranked);
  free(prefer_tag);
  free(bound);
  // Arguments are owned by the callee.
  router_route_request_free(req);
  router_list_candidate_free(candidates);
}
