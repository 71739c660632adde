// Starts Swagger UI on /docs. A file, not an inline script: the page's Content-Security-Policy (the pages'
// policy, script-src 'self') allows no inline scripts. Everything comes from this server (offline use).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url") || "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null, // no badge from validator.swagger.io: no internet needed, and no image from elsewhere
    presets: [SwaggerUIBundle.presets.apis]
  });
})();
