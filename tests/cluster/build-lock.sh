# Sourced by build.sh and kueue.sh: take_build_lock DIR makes DIR/.lock, one builder per cache entry at a time
# (mkdir is atomic). A lock left by a dead builder is taken over. The caller removes "$LOCK" when it is done.
# Needs the caller's log().
take_build_lock() {
  LOCK=$1/.lock
  while ! mkdir "$LOCK" 2>/dev/null; do
    holder=$(cat "$LOCK/pid" 2>/dev/null || true)
    if [[ -n $holder ]] && ! kill -0 "$holder" 2>/dev/null; then
      log "removing stale lock of dead builder $holder"
      rm -rf "$LOCK"
      continue
    fi
    log "another build (pid ${holder:-?}) holds $LOCK; waiting"
    sleep 10
  done
  echo $$ >"$LOCK/pid"
}
