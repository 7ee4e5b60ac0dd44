// Helpers shared by the CPU and CUDA registrations of the ai.quantc ops (ort/ops.cpp, ort/ops_cuda.cc). Include after
// onnxruntime_cxx_api.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace quantc_ort {

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

// The op's error (ORT_INVALID_ARGUMENT): "ai.quantc.<op>: <msg>".
[[noreturn]] inline void fail(const std::string& op, const std::string& msg) {
  ORT_CXX_API_THROW("ai.quantc." + op + ": " + msg, ORT_INVALID_ARGUMENT);
}

// An int attribute, or `fallback` when the node does not set it.
inline int64_t attr_int(const OrtApi* api, const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t v = fallback;
  OrtStatus* st = api->KernelInfoGetAttribute_int64(info, name, &v);
  if (st) { api->ReleaseStatus(st); return fallback; }
  return v;
}

}  // namespace quantc_ort
