# The two commands of the README, and a few more. Everything real happens in
# scripts/ and CMake; this file only names the steps.
BUILD ?= build
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: all deps build install run test fuzz bench format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD)

# make install PREFIX=/opt/herald (default /usr/local); DESTDIR is honoured.
PREFIX ?= /usr/local
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

run: build
	$(BUILD)/herald serve --listen $(HOST):$(PORT) --demo

test: deps
	@scripts/test.sh

fuzz: deps
	@scripts/fuzz.sh

bench: build
	@scripts/bench-core.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)
