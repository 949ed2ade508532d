# The README's two commands are `make local` and `make test`.
.PHONY: local test unit lint bench bench-routing bench-starts vm-test clean-hosts

local:        ## main job: boot models-local, run site.yml, print the smoke report
	scripts/run-local

test:         ## every test (what CI runs)
	scripts/test

unit:         ## fast tests only (no test hosts, no vLLM)
	scripts/bootstrap && .venv/bin/pytest -q tests/unit tests/lint

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
