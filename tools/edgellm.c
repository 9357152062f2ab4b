// The edgellm command: one binary, a subcommand per role (see tools/cmd_*.c).
#include <stdio.h>
#include <string.h>

#include "edgellm/core.h"
#include "edgellm/version.h"

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_controller(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_export_lora(int argc, char **argv);
int cmd_linkemu(int argc, char **argv);
int cmd_lora_join(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_place(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_embed_image(int argc, char **argv);
int cmd_catalog(int argc, char **argv);
int cmd_store(int argc, char **argv);

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"run", cmd_run, "generate text from a prompt"},
    {"chat", cmd_chat, "talk with a chat model (its chat template, history kept)"},
    {"logits", cmd_logits, "write the raw logits of every prompt position"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"info", cmd_info, "show a model's hyper-parameters, metadata and tensors"},
    {"convert", cmd_convert, "convert a llama2.c checkpoint + tokenizer to GGUF"},
    {"import", cmd_import, "convert a Hugging Face folder (Llama, Mistral, Qwen2) to GGUF"},
    {"quantize", cmd_quantize, "convert a GGUF model's weights to f16, bf16, q8_0, q4_0, q4_k, q6_k"},
    {"perplexity", cmd_perplexity, "measure a model's perplexity on a text file"},
    {"bench", cmd_bench, "prefill/decode speed against the machine's bandwidth and FMA peak"},
    {"embed-image", cmd_embed_image, "the projected embeddings of images (LLaVA-style projector files)"},
    {"synth", cmd_synth, "write a random-weight Llama-shaped GGUF of any size"},
    {"serve", cmd_serve, "serve a base model and many LoRA adapters over an OpenAI-compatible HTTP API"},
    {"worker", cmd_worker, "serve a range of layers to devices (split inference)"},
    {"controller", cmd_controller, "the edge network: route devices, apply placements"},
    {"catalog", cmd_catalog, "hash models into content-addressed blocks: what they share, the union's size"},
    {"store", cmd_store, "a block store folder: import models, list them, verify every block"},
    {"keygen", cmd_keygen, "make a CURVE key pair for a device or worker"},
    {"finetune", cmd_finetune, "train a LoRA adapter on a text or JSON-lines dataset"},
    {"export-lora", cmd_export_lora, "merge LoRA adapters into a base model's weights"},
    {"profile", cmd_profile, "measure per-layer compute and memory on this node (for plan)"},
    {"probe", cmd_probe, "measure a live link to a worker: round trip and throughput each way"},
    {"plan", cmd_plan, "choose where to cut from node profiles and link figures"},
    {"place", cmd_place, "choose which edge servers hold which models (shared blocks stored once)"},
    {"lora-join", cmd_lora_join, "combine the device and worker adapters of split fine-tuning"},
    {"linkemu", cmd_linkemu, "TCP proxy emulating a device-edge link (rate, delay, loss)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: edgellm SUBCOMMAND [options]   (edgellm help SUBCOMMAND for its options)\n");
    fprintf(f, "       edgellm --version\n\n");
    fprintf(f, "Runs Llama-family language models on CPUs, on a device and across edge servers.\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nCPU: %s%s\n", el_isa_name(el_cpu_isa()), el_cpu_has_avx512vnni() ? " + vnni" : "");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("edgellm %s\n", el_version());
        return 0;
    }
    if (!strcmp(argv[1], "help") && argc > 2) {  // edgellm help run = edgellm run --help
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            if (!strcmp(argv[2], commands[i].name)) {
                char *help_argv[] = {argv[2], "--help", NULL};
                return commands[i].fn(2, help_argv);
            }
        fprintf(stderr, "edgellm: unknown subcommand '%s' (see edgellm --help)\n", argv[2]);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "edgellm: unknown subcommand '%s' (see edgellm --help)\n", argv[1]);
    return 2;
}
