"""Build the operator and agent images without a container daemon and without pulling a base image:
reproducible OCI image layouts under build/images/<name>/, one per images/<x>.Dockerfile. The entry
point is images/build.py (`make images`; see cli).

The Dockerfile is the one definition of each image; this package reads it (a strict subset of the
syntax, see `dockerfile.parse_dockerfile`; anything else is refused with its line number) and builds
the same steps another way:

- the final stage's `apt-get install` line becomes `mmdebstrap --variant=minbase --include=...` of the
  Debian release named by the FROM tag (`debian:<release>-<YYYYMMDD>-slim@sha256:...`), with the
  dpkg path excludes of Debian's slim images; the tag's date is the epoch of that rootfs
  (SOURCE_DATE_EPOCH for mmdebstrap and the maintainer scripts, and the time given to every file
  the build creates), so a cached rootfs does not depend on when it was made (debian, rootfs);
- the build stage runs on this machine, which must be that Debian release with the stage's
  packages installed (`make deps`): its COPY lines are copied from the repository (minus
  .dockerignore), its RUN lines run verbatim in bwrap over the host's /usr and /etc; the
  directories the final stage copies from it (`COPY --from=build /wheels ...`) are kept (wheels);
- the final stage's COPY --from and RUN lines run verbatim in bwrap with the rootfs as `/`, without
  network; then the remaining byte-compiled files of Debian's Python are rewritten as hash-based
  .pyc (PYTHONHASHSEED=0) and ld.so.cache is regenerated (rootfs);
- ENV, USER, WORKDIR, LABEL and ENTRYPOINT become the OCI image config, as a daemon would write it
  (oci).

The layer is written here (layer): entries sorted, mtimes clamped to SOURCE_DATE_EPOCH (the commit's
time), owners numeric, no device nodes, apt caches and lists, logs or machine-id; gzip with mtime 0.
Same inputs, same bytes: the manifest digest is the image's identity (layout).

The expensive parts are cached under ~/.cache/aicert/images/<kind>-<hash of inputs> (cache): the build
stage's outputs (the wheels), the debootstrapped rootfs (keyed by the Debian archive's package
indexes, so a security update rebuilds it), and the rootfs after the final stage's steps. The layer,
config, manifest and index are always written anew. Needs root, mmdebstrap and bwrap.

Modules, in the order of a build:

- spec: the data model of an image (its two stages, steps, config);
- dockerfile: the parser of the Dockerfile subset into a spec;
- repository: the checkout (paths, commit, ARG values) and the build context (.dockerignore);
- host: this machine (root, tools, Debian release, packages); sandbox: bwrap and logged commands;
- cache: the entries under ~/.cache/aicert/images;
- wheels: the build stage; debian: mmdebstrap and the archive; rootfs: the image's root filesystem;
- layer: the tar layer; oci: config, manifest, index; layout: the OCI layout on disk;
- lock: the requirements locks; cli: the command line and the build of one image;
- report: the error that stops a build, and progress lines.
"""
