/*
 * fabnet-info: what fabnet would expose on this machine, and why.
 * For every device: provider, fabric, domain, NIC PCI path and link speed, the
 * mode / mr_mode / CQ data size the provider granted, on efa the fabrics
 * offered and the one chosen, emulated RMA, 128-byte write ordering (and so
 * LL128), shm and CUDA API options, the ptrSupport bits
 * fabnet would advertise and the reason for every bit it would not, then the
 * effective configuration with where each value came from.
 * `--json` prints the same as JSON. Exit status 0 when at least one device
 * opens, 1 when none does, 2 on a usage or configuration error.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fabric.h>

#include "core/config.h"
#include "doctor.h"
#include "nccl_net_abi.h"
#include "transport/device.h"
#include "transport/fabric.h"
#include "transport/hmem.h"
#include "transport/rails.h"

struct bitname {
	uint64_t bit;
	const char *name;
};

static const struct bitname mr_bits[] = {
	{FI_MR_LOCAL, "FI_MR_LOCAL"}, {FI_MR_RAW, "FI_MR_RAW"},
	{FI_MR_VIRT_ADDR, "FI_MR_VIRT_ADDR"}, {FI_MR_ALLOCATED, "FI_MR_ALLOCATED"},
	{FI_MR_PROV_KEY, "FI_MR_PROV_KEY"}, {FI_MR_MMU_NOTIFY, "FI_MR_MMU_NOTIFY"},
	{FI_MR_RMA_EVENT, "FI_MR_RMA_EVENT"}, {FI_MR_ENDPOINT, "FI_MR_ENDPOINT"},
	{FI_MR_HMEM, "FI_MR_HMEM"}, {0, NULL},
};

static const struct bitname mode_bits[] = {
#ifdef FI_CONTEXT
	{FI_CONTEXT, "FI_CONTEXT"},
#endif
#ifdef FI_CONTEXT2
	{FI_CONTEXT2, "FI_CONTEXT2"},
#endif
#ifdef FI_RX_CQ_DATA
	{FI_RX_CQ_DATA, "FI_RX_CQ_DATA"},
#endif
	{FI_MSG_PREFIX, "FI_MSG_PREFIX"}, {0, NULL},
};

static void bits_str(uint64_t v, const struct bitname *names, char *out, size_t len, int json)
{
	size_t used = 0;
	int first = 1;

	out[0] = '\0';
	for (int i = 0; names[i].name; i++)
		if (v & names[i].bit) {
			used += (size_t)snprintf(out + used, len - used, json ? "%s\"%s\"" : "%s%s",
						 first ? "" : json ? ", " : "|", names[i].name);
			first = 0;
			if (used >= len)
				return;
		}
	if (first && !json)
		snprintf(out, len, "none");
}

static void json_str(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static const char *src_name(enum fabnet_config_source s)
{
	return s == FABNET_SRC_ENV ? "environment" : "default";
}

struct cfg_row {
	const char *name;
	char value[520];
	const char *source;
};

static int config_rows(const struct fabnet_config *c, struct cfg_row *rows)
{
	static const char *const flush_names[] = {"0", "read", "cuda", "always"};
	int n = 0;

#define ROW(nm, src, ...)                                                        \
	do {                                                                     \
		rows[n].name = (nm);                                             \
		snprintf(rows[n].value, sizeof(rows[n].value), __VA_ARGS__);    \
		rows[n].source = (src);                                          \
		n++;                                                             \
	} while (0)
	ROW("FABNET_PROVIDER", c->provider[0] ? c->provider_from : "default", "%s",
	    c->provider[0] ? c->provider : "(automatic)");
	ROW("FABNET_IFACE", src_name(c->src_iface), "%s", c->iface[0] ? c->iface : "(all)");
	ROW("FABNET_ALLOW_LOOPBACK", src_name(c->src_allow_loopback), "%d", c->allow_loopback);
	ROW("FABNET_EAGER_MAX", src_name(c->src_eager_max), "%zu", c->eager_max);
	ROW("FABNET_RX_BUFFERS", src_name(c->src_rx_buffers), "%u", c->rx_buffers);
	ROW("FABNET_TX_BUFFERS", src_name(c->src_tx_buffers), "%u", c->tx_buffers);
	ROW("FABNET_EAGER_CREDITS", src_name(c->src_eager_credits), "%u", c->eager_credits);
	ROW("FABNET_MAX_WRITE", src_name(c->src_max_write), "%zu", c->max_write);
	ROW("FABNET_WRITES_IN_FLIGHT", src_name(c->src_writes_in_flight), "%u", c->writes_in_flight);
	ROW("FABNET_CONNECT_TIMEOUT_MS", src_name(c->src_connect_timeout), "%u", c->connect_timeout_ms);
	ROW("FABNET_LINK_SPEED_MBPS", src_name(c->src_link_speed), "%u", c->link_speed_mbps);
	ROW("FABNET_PEER_TIMEOUT_MS", src_name(c->src_peer_timeout), "%u", c->peer_timeout_ms);
	ROW("FABNET_HMEM", src_name(c->src_hmem), "%d", c->hmem);
	ROW("FABNET_DMABUF", src_name(c->src_dmabuf), "%d", c->dmabuf);
	ROW("FABNET_GDR_FLUSH", src_name(c->src_gdr_flush), "%s", flush_names[c->gdr_flush & 3]);
	ROW("FABNET_EFA_FABRIC", src_name(c->src_efa_fabric), "%s",
	    c->efa_fabric == FABNET_EFA_RDM ? "efa" : c->efa_fabric == FABNET_EFA_DIRECT ? "efa-direct" : "auto");
	ROW("FABNET_RAILS", src_name(c->src_rails), "%u", c->rails);
	ROW("FABNET_RAIL_GROUPS", src_name(c->src_rail_groups), "%s",
	    c->rail_groups[0] ? c->rail_groups : "(from the topology)");
	ROW("FABNET_TOPO_FILE", src_name(c->src_topo_file), "%s",
	    c->topo_file[0] ? c->topo_file : "(this machine)");
	ROW("FABNET_MIN_STRIPE", src_name(c->src_min_stripe), "%zu", c->min_stripe);
	ROW("FABNET_STRIPE_ALIGN", src_name(c->src_stripe_align), "%zu", c->stripe_align);
	ROW("FABNET_CHUNK_SIZE", src_name(c->src_chunk_size), "%zu", c->chunk_size);
	ROW("FABNET_RAIL_INFLIGHT", src_name(c->src_rail_inflight), "%zu", c->rail_inflight);
#undef ROW
	return n;
}

/* How a peer addresses a dma-buf region here (the probe found it out). */
static const char *dmabuf_raddr(const struct fabnet_dev *d)
{
	if (d->virt_addr)
		return "virtual";
	return d->dmabuf_raddr_word ? "fd_word" : "offset";
}

static const char *tri(int v, const char *yes, const char *no)
{
	return v == 1 ? yes : v == 0 ? no : "unknown";
}

/* The efa provider's fabric choice and endpoint options (transport/efa.c). */
static void print_efa(const struct fabnet_dev *d)
{
	const struct fabnet_dev_efa *e = &d->efa;

	printf("  efa fabrics   offered: %s; chosen: %s\n", e->offered, e->fabric);
	printf("    why:        %s\n", e->fabric_why);
	if (!d->opened)
		return;
	printf("  RMA           read %s, write %s\n",
	       tri(e->emulated_read, "emulated by the provider", "by the device"),
	       tri(e->emulated_write, "emulated by the provider", "by the device"));
	printf("  128-byte in-order writes  %s\n", e->inorder128 == 1 ? "yes (NCCL may use LL128)" : "no");
	if (e->inorder128 != 1)
		printf("    why:        %s\n    NCCL LL128: %s\n", e->why_no_inorder128,
		       e->ll128_off ? "kept off (NCCL_PROTO excludes LL128)"
				    : "NOT kept off: NCCL_PROTO allows it (see the log)");
	printf("  shm           %s\n", e->shm_permitted == 0 ? "off (FI_OPT_SHARED_MEMORY_PERMITTED=false)"
			: e->shm_permitted == 1 ? "the provider refused to turn it off" : "not set");
	printf("  CUDA API      %s\n", e->cuda_api_permitted == 0 ? "forbidden (FI_OPT_CUDA_API_PERMITTED=false)"
			: e->cuda_api_permitted == 1 ? e->why_cuda_api
						     : "not set (no accelerator memory on this device)");
	if (e->max_send)
		printf("  largest send  %zu bytes (FI_OPT_MAX_MSG_SIZE); eager data up to %zu\n", e->max_send,
		       d->eager_max);
}

static void json_efa(const struct fabnet_dev *d)
{
	const struct fabnet_dev_efa *e = &d->efa;

	printf("     \"efa\": {\"offered\": ");
	json_str(e->offered);
	printf(", \"fabric\": ");
	json_str(e->fabric);
	printf(", \"why\": ");
	json_str(e->fabric_why);
	printf(", \"emulated_read\": %d, \"emulated_write\": %d, \"inorder128\": %d, \"ll128_off\": %d,\n",
	       e->emulated_read, e->emulated_write, e->inorder128, e->ll128_off);
	printf("             \"why_no_inorder128\": ");
	json_str(e->inorder128 == 1 ? "" : e->why_no_inorder128);
	printf(", \"shm_permitted\": %d, \"cuda_api_permitted\": %d, \"max_send\": %zu},\n",
	       e->shm_permitted, e->cuda_api_permitted, e->max_send);
}

static void usage(void)
{
	fprintf(stderr, "usage: fabnet-info [--json]\n"
			"Prints the devices fabnet would expose and why each capability is or is "
			"not advertised.\n"
			"       fabnet-info --doctor [--json]\n"
			"Checks whether NCCL would load fabnet and fabnet could carry a job here; "
			"exit 0 ok,\n1 warnings, 2 errors (docs/troubleshooting.md).\n");
}

int main(int argc, char **argv)
{
	struct fabnet_dev *devs = NULL;
	struct cfg_row rows[40];
	int json = 0, ndev, usable = 0, nrows, ngroups = 0, *primaries = NULL;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--doctor"))
			return fabnet_doctor_main(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else {
			usage();
			return strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? 2 : 0;
		}
	}
	if (fabnet_config_load())
		return 2;
	ndev = fabnet_fabric_discover(fabnet_config(), &devs);
	if (ndev < 0)
		ndev = 0;
	for (int i = 0; i < ndev; i++) {
		fabnet_hmem_probe(&devs[i]);
		usable += devs[i].opened;
	}
	nrows = config_rows(fabnet_config(), rows);
	/* What NCCL sees: one device per rail group (transport/rails.c). */
	primaries = calloc((size_t)(ndev ? ndev : 1), sizeof(int));
	if (primaries && ndev)
		ngroups = fabnet_rails_plan(devs, ndev, fabnet_config(), primaries);

	if (json) {
		printf("{\n  \"libfabric_built\": ");
		json_str(fabnet_built_libfabric());
		printf(",\n  \"libfabric_runtime\": \"%u.%u\",\n", FI_MAJOR(fi_version()),
		       FI_MINOR(fi_version()));
		printf("  \"usable_devices\": %d,\n  \"devices\": [", usable);
		for (int i = 0; i < ndev; i++) {
			struct fabnet_dev *d = &devs[i];
			char mr[512], mode[256];
			bits_str(d->info->domain_attr->mr_mode, mr_bits, mr, sizeof(mr), 1);
			bits_str(d->info->mode, mode_bits, mode, sizeof(mode), 1);
			printf("%s\n    {\"index\": %d, \"provider\": ", i ? "," : "", i);
			json_str(d->prov_name);
			printf(", \"fabric\": ");
			json_str(d->info->fabric_attr->name);
			printf(", \"domain\": ");
			json_str(d->name);
			printf(", \"pci_path\": ");
			if (d->pci_path)
				json_str(d->pci_path);
			else
				printf("null");
			printf(",\n     \"speed_mbps\": %d, \"speed_source\": \"%s\", \"opened\": %s,\n",
			       d->speed_mbps, d->speed_reported ? "nic" : "FABNET_LINK_SPEED_MBPS",
			       d->opened ? "true" : "false");
			printf("     \"mode\": [%s], \"mr_mode\": [%s], \"cq_data_size\": %zu, "
			       "\"fi_hmem\": %s,\n", mode, mr, d->info->domain_attr->cq_data_size,
			       d->hmem ? "true" : "false");
			if (d->efa.is_efa)
				json_efa(d);
			printf("     \"ptr_support\": {\"HOST\": true, \"CUDA\": %s, \"DMABUF\": %s},\n",
			       d->ptr_support & NCCL_PTR_CUDA ? "true" : "false",
			       d->ptr_support & NCCL_PTR_DMABUF ? "true" : "false");
			printf("     \"dmabuf_raddr\": ");
			if (d->ptr_support & NCCL_PTR_DMABUF)
				printf("\"%s\",\n", dmabuf_raddr(d));
			else
				printf("null,\n");
			printf("     \"not_advertised\": {");
			int first = 1;
			if (!(d->ptr_support & NCCL_PTR_CUDA)) {
				printf("\"CUDA\": ");
				json_str(d->why_no_cuda);
				first = 0;
			}
			if (!(d->ptr_support & NCCL_PTR_DMABUF)) {
				printf("%s\"DMABUF\": ", first ? "" : ", ");
				json_str(d->why_no_dmabuf);
			}
			printf("}}");
		}
		printf("\n  ],\n  \"nccl_devices\": [");
		for (int g = 0; g < ngroups; g++) {
			struct fabnet_dev *p = &devs[primaries[g]];
			int speed = 0;
			printf("%s\n    {\"index\": %d, \"rails\": [", g ? "," : "", g);
			for (int k = 0; k < p->nrails; k++) {
				printf("%s%d", k ? ", " : "", (int)(p->rails[k] - devs));
				speed += p->rails[k]->speed_mbps;
			}
			printf("], \"speed_mbps\": %d}", speed);
		}
		printf("\n  ],\n  \"configuration\": [");
		for (int i = 0; i < nrows; i++) {
			printf("%s\n    {\"name\": \"%s\", \"value\": ", i ? "," : "", rows[i].name);
			json_str(rows[i].value);
			printf(", \"source\": ");
			json_str(rows[i].source);
			printf("}");
		}
		printf("\n  ]\n}\n");
	} else {
		printf("fabnet-info: libfabric %s at build, %u.%u at run time; %d device%s, %d usable\n",
		       fabnet_built_libfabric(), FI_MAJOR(fi_version()), FI_MINOR(fi_version()),
		       ndev, ndev == 1 ? "" : "s", usable);
		for (int i = 0; i < ndev; i++) {
			struct fabnet_dev *d = &devs[i];
			char mr[512], mode[256];
			bits_str(d->info->domain_attr->mr_mode, mr_bits, mr, sizeof(mr), 0);
			bits_str(d->info->mode, mode_bits, mode, sizeof(mode), 0);
			printf("\ndevice %d: %s\n", i, d->name);
			printf("  provider      %s (fabric %s)%s\n", d->prov_name,
			       d->info->fabric_attr->name, d->opened ? "" : "  [did not open]");
			printf("  pci path      %s\n", d->pci_path ? d->pci_path : "(none)");
			printf("  link speed    %d Mb/s (%s)\n", d->speed_mbps,
			       d->speed_reported ? "reported by the NIC"
						 : "not reported: FABNET_LINK_SPEED_MBPS");
			printf("  mode          %s\n  mr_mode       %s\n  cq data       %zu bytes\n",
			       mode, mr, d->info->domain_attr->cq_data_size);
			if (d->efa.is_efa)
				print_efa(d);
			printf("  ptrSupport    HOST%s%s\n",
			       d->ptr_support & NCCL_PTR_CUDA ? "|CUDA" : "",
			       d->ptr_support & NCCL_PTR_DMABUF ? "|DMABUF" : "");
			if (!(d->ptr_support & NCCL_PTR_CUDA))
				printf("    no CUDA:    %s\n", d->why_no_cuda);
			if (!(d->ptr_support & NCCL_PTR_DMABUF))
				printf("    no DMABUF:  %s\n", d->why_no_dmabuf);
			else
				printf("    DMABUF:     remote addresses are %s\n",
				       !strcmp(dmabuf_raddr(d), "fd_word")
					       ? "offsets from the fd word of struct fi_mr_dmabuf "
						 "(libfabric's utility MR map)"
					       : !strcmp(dmabuf_raddr(d), "virtual")
						 ? "virtual (FI_MR_VIRT_ADDR)"
						 : "offsets from the region's first byte");
		}
		printf("\nNCCL devices (rail groups of the devices above):\n");
		for (int g = 0; g < ngroups; g++) {
			struct fabnet_dev *p = &devs[primaries[g]];
			int speed = 0;
			printf("  %d: ", g);
			for (int k = 0; k < p->nrails; k++) {
				printf("%s%s", k ? "+" : "", p->rails[k]->name);
				speed += p->rails[k]->speed_mbps;
			}
			printf("  (%d rail%s, %d Mb/s)\n", p->nrails, p->nrails > 1 ? "s" : "", speed);
		}
		printf("\nconfiguration:\n");
		for (int i = 0; i < nrows; i++)
			printf("  %-26s %-16s (%s)\n", rows[i].name, rows[i].value, rows[i].source);
	}
	fabnet_fabric_free(devs, ndev);
	free(primaries);
	return usable > 0 ? 0 : 1;
}
