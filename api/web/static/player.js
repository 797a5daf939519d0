// Moves a playhead over the audio waveform and seeks when the waveform is clicked.
// The page works without it: the <audio> element has its own controls.
(function () {
  "use strict";
  var audio = document.getElementById("player");
  var wave = document.getElementById("waveform");
  var head = document.getElementById("playhead");
  if (!audio || !wave || !head) return;
  function place() {
    var d = audio.duration;
    head.style.left = (d > 0 ? (100 * audio.currentTime) / d : 0) + "%";
  }
  audio.addEventListener("timeupdate", place);
  audio.addEventListener("loadedmetadata", place);
  wave.addEventListener("click", function (e) {
    var box = wave.getBoundingClientRect();
    if (audio.duration > 0) audio.currentTime = ((e.clientX - box.left) / box.width) * audio.duration;
  });
})();
