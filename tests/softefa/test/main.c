/* softefa verbs-level tests: sefa-test [--list] [SCENARIO...] */
#include "harness.h"

#include <string.h>

static const struct scenario *const tables[] = { basic_scenarios, error_scenarios, rdma_scenarios };

int main(int argc, char **argv)
{
	int passed = 0, failed = 0, skipped = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
		for (const struct scenario *s = tables[t]; s->name; s++) {
			bool wanted = argc < 2;
			int rc;

			for (int i = 1; i < argc; i++)
				if (!strcmp(argv[i], s->name) || !strcmp(argv[i], "--list"))
					wanted = true;
			if (!wanted)
				continue;
			if (argc > 1 && !strcmp(argv[1], "--list")) {
				printf("%s\n", s->name);
				continue;
			}
			rc = s->run();
			if (rc == 0)
				passed++;
			else if (rc == SKIP_RC)
				skipped++;
			else
				failed++;
		}
	if (argc < 2 || strcmp(argv[1], "--list"))
		printf("softefa verbs tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed ? 1 : 0;
}
