#!/usr/bin/env bash
# Make a CJK font available to matplotlib so Chinese text in figures renders (not boxes).
# As root: install Debian's WenQuanYi Micro Hei. Otherwise: unpack the same package into .cache/fonts,
# which helpers.plots also searches. Never fails the setup: without a font, figures warn instead.
set -u
cd "$(dirname "$0")/.."
if command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; then exit 0; fi
if [ -d .cache/fonts ] && [ -n "$(find .cache/fonts -name '*.tt[cf]' 2>/dev/null)" ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: no CJK font and no apt-get; install a Chinese font (e.g. Noto Sans CJK SC) for figures" >&2; exit 0
fi
if [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
    apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1; }) && exit 0
fi
mkdir -p .cache/fonts && tmp=$(mktemp -d) && \
  (cd "$tmp" && apt-get download fonts-wqy-microhei >/dev/null 2>&1) && dpkg -x "$tmp"/*.deb .cache/fonts && exit 0
echo "warning: could not install a CJK font; Chinese text in figures will show as boxes" >&2
exit 0
