# maula-chat: `make run` starts the server with its embedded defaults; `make test` runs every test.
GO      ?= go
BIN     := bin/maula-chat
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Without any provider key, run turns on the offline echo provider so a fresh clone can chat.
PROVIDER_KEYS := $(ANTHROPIC_API_KEY)$(OPENAI_API_KEY)$(XAI_API_KEY)$(MISTRAL_API_KEY)$(GEMINI_API_KEY)

.PHONY: run build test lint bench fuzz clean js-deps

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/maula-chat

run: build
	@echo "maula-chat: open http://$${MAULA_ADDR:-127.0.0.1:8080}/ once it says it is listening"
	MAULA_ECHO_PROVIDER=$${MAULA_ECHO_PROVIDER:-$(if $(PROVIDER_KEYS),0,1)} ./$(BIN) serve

# Every test, integration included (embedded FerretDB, a real redis-server when installed),
# with the race detector: the server is concurrent throughout.
test: lint js-deps
	$(GO) test -race -timeout 15m ./...

# The JS SDK's tests (sdk/jstest) and the browser tests (web/e2e) need their pinned npm
# dependencies; installed from the npm cache when it has them.
js-deps:
	@if command -v node >/dev/null 2>&1; then cd sdk/js && npm ci --prefer-offline --no-audit --no-fund --loglevel=error; fi
	@if command -v node >/dev/null 2>&1; then cd web/e2e && npm ci --prefer-offline --no-audit --no-fund --loglevel=error; fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# A short run of every scenario against its floors; results in bench-results/.
bench: build
	./$(BIN) bench -short all

clean:
	rm -rf bin
