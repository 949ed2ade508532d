# The README's two commands are `make local` and `make test`. Tiers: docs/testing.md.
.PHONY: local check test test-all scenario affected lint bench bench-routing bench-starts vm-test clean-hosts

local:        ## main job: boot models-local, run site.yml, print the smoke report
	scripts/run-local

check:        ## quick tier: unit, lint, rendered configs, preflight bad input; no test host, no model (~2 min)
	scripts/test check

test:         ## what CI runs: check, then the main job (site) and the production rehearsal on test hosts
	scripts/test test

test-all:     ## every scenario, whole: check, site with its disruptive paths, production, fleet, os_tuning, arm64, VM reboot
	scripts/test all

scenario:     ## one scenario, whole: make scenario S=site (names: scripts/affected_scenarios.py --list)
	scripts/test scenario $(S)

affected:     ## the scenarios your change touches (against origin/main, or HEAD)
	@scripts/affected_scenarios.py

lint:
	scripts/bootstrap && .venv/bin/pytest -q tests/lint

bench:        ## legacy vs low_latency, routing, starts and roofline, on test hosts; writes docs/benchmarks.md
	scripts/bootstrap && scripts/build-model >/dev/null && .venv/bin/python scripts/bench_profiles.py \
	  && .venv/bin/python scripts/bench_starts.py

bench-routing: ## only the routing figures (accuracy, added TTFT, router memory) -> docs/benchmarks.md
	scripts/bootstrap && scripts/build-model >/dev/null && .venv/bin/python scripts/bench_profiles.py --routing

bench-starts: ## only cold/warm starts, a lazy expert's first token, decode share of the roofline
	scripts/bootstrap && scripts/build-model >/dev/null && .venv/bin/python scripts/bench_starts.py

vm-test:      ## os_tuning on a QEMU VM, values proven after a reboot
	scripts/bootstrap && .venv/bin/python scripts/vm_reboot_test.py

clean-hosts:  ## tear down every test host the harness booted
	python3 scripts/testhost.py down --all --kept-too
