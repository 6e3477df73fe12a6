/* cmd_devices.c — `edgespec devices [--json]`: the devices a forward pass can run on. The CPU first
 * (the kernel level in use), then every Vulkan device the loader reports, with the capabilities the
 * kernels consult. A build without Vulkan, or a machine without a Vulkan driver, lists the CPU alone
 * and says why on stderr (and in "vulkan_error" with --json). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "kernels/matmul.h"

static const char k_usage[] = "edgespec devices [--json]";

#define MAX_DEVICES 16

static int64_t host_memory(void) {
    const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size : 0;
}

int cmd_devices(int argc, char **argv) {
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: %s\n\nLists the devices `--device` can name: cpu, and vulkan:N for each Vulkan device\n"
                   "(name, type, device-local memory, subgroup size, largest buffer binding, features).\n\n"
                   "options:\n  --json       one JSON object: {\"devices\":[{\"backend\",\"index\",\"name\",\"memory_bytes\",\"features\"...}]}\n"
                   "  -h, --help   show this help\n",
                   k_usage);
            return 0;
        } else
            return cli_usage_error("devices", k_usage, "unknown option '%s'", argv[i]);
    }
    cli_keep_vulkan_driver();
    es_device_info dev[MAX_DEVICES];
    int n = 0;
    es_err err = {0};
    const es_status st = es_devices(dev, MAX_DEVICES, &n, &err);
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    const char *cpu_level = es_cpu_level_name(es_cpu_level_get());
    if (!json) {
        printf("%-10s %-44s %-10s %10s %9s  %s\n", "device", "name", "type", "memory", "subgroup", "features");
        printf("%-10s %-44s %-10s %9.1fG %9s  %s\n", "cpu", "host CPU", "cpu", (double)host_memory() / (1 << 30), "-", cpu_level);
        for (int i = 0; i < n; i++) {
            char id[32], feat[256] = "";
            snprintf(id, sizeof id, "vulkan:%d", dev[i].index);
            for (int f = 0; f < dev[i].n_features; f++) {
                if (f) strncat(feat, ",", sizeof feat - strlen(feat) - 1);
                strncat(feat, dev[i].features[f], sizeof feat - strlen(feat) - 1);
            }
            printf("%-10s %-44.44s %-10s %9.1fG %9u  %s\n", id, dev[i].name, dev[i].type,
                   (double)dev[i].memory_bytes / (1 << 30), dev[i].subgroup_size, feat);
        }
        if (st != ES_OK) fprintf(stderr, "edgespec devices: vulkan: %s\n", err.msg);
        return 0;
    }
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "devices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "backend", "cpu");
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON_AddStringToObject(c, "name", "host CPU");
    cJSON_AddNumberToObject(c, "memory_bytes", (double)host_memory());
    cJSON *cf = cJSON_AddArrayToObject(c, "features");
    cJSON_AddItemToArray(cf, cJSON_CreateString(cpu_level));
    cJSON_AddItemToArray(arr, c);
    for (int i = 0; i < n; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "backend", dev[i].backend);
        cJSON_AddNumberToObject(d, "index", dev[i].index);
        cJSON_AddStringToObject(d, "name", dev[i].name);
        cJSON_AddStringToObject(d, "type", dev[i].type);
        cJSON_AddNumberToObject(d, "memory_bytes", (double)dev[i].memory_bytes);
        cJSON_AddNumberToObject(d, "subgroup_size", dev[i].subgroup_size);
        cJSON_AddNumberToObject(d, "max_storage_buffer_range", (double)dev[i].max_storage_buffer_range);
        cJSON *f = cJSON_AddArrayToObject(d, "features");
        for (int k = 0; k < dev[i].n_features; k++) cJSON_AddItemToArray(f, cJSON_CreateString(dev[i].features[k]));
        cJSON_AddItemToArray(arr, d);
    }
    if (st != ES_OK) cJSON_AddStringToObject(root, "vulkan_error", err.msg);
    char *s = cJSON_PrintUnformatted(root);
    if (s) printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(root);
    return s ? 0 : 1;
}
