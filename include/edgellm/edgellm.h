// libedgellm's public API in one include: what a program needs to load a
// model (model.h), tokenize (tokenize.h), generate with sampling (sample.h,
// and chat templates in chat.h), run as the device of a split run against
// edge workers (split.h, link.h for keys), and apply LoRA adapters (lora.h).
// The installed headers are these, the ones they include (core.h,
// tensor.h, gguf.h, wire.h, version.h) and store.h (content-addressed model
// blocks, included on its own); everything else stays in the source tree. Build against it with pkg-config (`pkg-config --cflags --libs
// edgellm`) or CMake (`find_package(edgellm)`, target edgellm::edgellm).
// examples/generate.c and examples/device.c are complete programs.
#ifndef EDGELLM_EDGELLM_H
#define EDGELLM_EDGELLM_H

#include "edgellm/chat.h"
#include "edgellm/core.h"
#include "edgellm/link.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"
#include "edgellm/split.h"
#include "edgellm/tokenize.h"
#include "edgellm/version.h"

#endif
