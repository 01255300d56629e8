#  Copies the console's libraries into OUT (cmake -P, at build time): the
#  files package-lock.json pins, as they are, except that the one bare
#  import between them (preact's hooks import "preact") is made relative,
#  so the browser needs no import map (an inline script the CSP forbids).
file(MAKE_DIRECTORY ${OUT})
foreach(pair
    "preact/dist/preact.mjs=preact.mjs"
    "preact/hooks/dist/hooks.mjs=hooks.mjs"
    "htm/dist/htm.mjs=htm.mjs"
    "uplot/dist/uPlot.esm.js=uPlot.esm.js"
    "uplot/dist/uPlot.min.css=uPlot.min.css")
  string(REPLACE "=" ";" parts "${pair}")
  list(GET parts 0 from)
  list(GET parts 1 to)
  if(NOT EXISTS ${MODULES}/${from})
    message(WARNING "console: ${MODULES}/${from} is missing (run ./setup.sh); the console will not load")
    continue()
  endif()
  file(READ ${MODULES}/${from} text)
  string(REPLACE "from\"preact\"" "from\"./preact.mjs\"" text "${text}")
  file(WRITE ${OUT}/${to}.tmp "${text}")
  file(COPY_FILE ${OUT}/${to}.tmp ${OUT}/${to} ONLY_IF_DIFFERENT)
  file(REMOVE ${OUT}/${to}.tmp)
endforeach()
